#!/usr/bin/env bash
# Throw-away venv for the peer gradient benchmark (gradients.py; issue 11:
# "integrated gradients >= 2.5x faster than Captum"): torch (run on CPU),
# transformers + gguf (to load and dequantize the GGUF), captum and inseq.
# Everything comes from PyPI, versions pinned to the set that worked together.
#
# torch: PyPI's Linux torch wheel is the CUDA build; `pip install --no-deps torch`
# installs but `import torch` then fails (libcudart.so.13 / libcublasLt not
# found), so torch is installed with its nvidia-*/triton deps (~5.8 GB venv in
# all; unused on CPU). inseq is installed --no-deps with its deps listed here:
# inseq pins typeguard<=2.13.3. transformers needs accelerate to load a GGUF.
#
# Usage: tools/peers/setup.sh          (VENV=/tmp/peers-venv by default)
set -euo pipefail
VENV="${VENV:-/tmp/peers-venv}"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip==26.3 "setuptools==84.2.1"
"${PIP[@]}" torch==2.15.0
"${PIP[@]}" transformers==5.23.0 gguf==0.19.0 accelerate==1.15.0 \
    sentencepiece==0.2.3 protobuf==7.36.2 numpy==2.4.6 \
    captum==0.9.0 matplotlib==3.11.2 tqdm==4.70.1 packaging==26.4
"${PIP[@]}" --no-deps inseq==0.7.1
"${PIP[@]}" typeguard==2.13.3 jaxtyping==0.3.11 treescope==0.1.10 rich==15.0.0 \
    aiohttp==3.14.5 authlib==1.9.10 cryptography==50.0.2 fonttools==4.68.0 \
    marshmallow==4.4.0 tornado==6.6.1 regex==2026.11.19 requests==2.34.2 \
    urllib3==2.8.0
"$VENV/bin/pip" check
"$VENV/bin/python" -c 'import torch, transformers, captum, inseq, gguf; print("ok torch", torch.__version__, "transformers", transformers.__version__, "captum", captum.__version__)'
