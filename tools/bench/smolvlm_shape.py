#!/usr/bin/env python3
"""A random-weight checkpoint with SmolVLM-256M-Instruct's shapes, for timing only.

No SmolVLM weights can be downloaded on the development machines, but speed depends on shapes,
not values: this writes an Idefics3 directory with SmolVLM-256M's vision tower (SigLIP,
512 px tiles, 16 px patches, 12 layers of 768), pixel shuffle x4 (64 tokens a tile), the
processor's settings (longest edge 2048, tiles of 512) and SmolLM2-135M's text-model shape,
with random weights and the tiny fixture tokenizer (so the vocabulary rows past it are never
used). Its outputs mean nothing; `glassbox tam` on it measures the vision tower, prefill and
maps at the real model's size.

Usage (the venv of tools/fixtures/gen_idefics3.py):
    python smolvlm_shape.py OUT_DIR
"""
import os
import sys

import torch
from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from gen_idefics3 import CHAT_TEMPLATE, tokenizer  # noqa: E402


def main(out):
    torch.manual_seed(0)
    tok = tokenizer()
    config = Idefics3Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=4,
        tie_word_embeddings=True,
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=512, patch_size=16),
        text_config=dict(model_type="llama", vocab_size=49280, hidden_size=576,
                         intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    )
    model = Idefics3ForConditionalGeneration(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    improc = Idefics3ImageProcessorPil(size={"longest_edge": 2048},
                                       max_image_size={"longest_edge": 512},
                                       do_image_splitting=True)
    Idefics3Processor(image_processor=improc, tokenizer=tok, image_seq_len=64,
                      chat_template=CHAT_TEMPLATE).save_pretrained(out)
    tok.save_pretrained(out)
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1])
