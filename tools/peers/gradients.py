#!/usr/bin/env python3
"""Peer benchmark: gradient attribution in Captum and inseq on the Glassbox test model.

Why: issue 11 asks for Glassbox's integrated gradients to be >= 2.5x faster than
Captum's. This script times the peers on the same model (the SmolLM2-135M-Instruct
GGUF, which transformers dequantizes to f32), the same sentences
(tests/fixtures/sentences.jsonl), the same thread count and the same target, and
keeps their per-token scores so Glassbox's values can be compared to them.

What, per sentence (ids = [<|endoftext|>] + tokenizer(input, add_special_tokens=False):
Glassbox starts a raw prompt with the document-start token, so the fully ablated input is
still a prompt; it is never a unit, keeps its value in every baseline, and its score is
dropped, so both tools explain the same number): the target is the log-probability of the model's argmax next token after
the last input token, log_softmax(logits[-1])[argmax], found once without gradients.
Baseline for every method that needs one: the `<|endoftext|>` token (id 0) at every
position. Methods:
  captum_lig       LayerIntegratedGradients over model.model.embed_tokens, --steps
                   steps, Gauss-Legendre (Captum's default), internal_batch_size =
                   steps (all steps in one batch); convergence delta reported.
  captum_ixg       InputXGradient on inputs_embeds: one forward + one backward.
  captum_ablation  FeatureAblation, each token a feature, replaced by the baseline id
                   (Captum's default perturbations_per_eval=1: T+1 forwards).
  inseq_ig         inseq "integrated_gradients" (inseq's own baseline is the unk
                   token, which for SmolLM2 is `<|endoftext|>` too), same steps and
                   batch, one forced generated token (input + argmax piece),
                   attributed_fn = log-probability.
  inseq_ixg        inseq "input_x_gradient", same target.
Scores: the attribution summed over the embedding dimension, one per input token.
Timing: time.perf_counter around the attribution call only (model load excluded),
after one untimed warm-up on the first sentence. Model parameters keep
requires_grad as loaded (as a plain Captum/inseq user would have them).
Memory: per method, the peak RSS (VmHWM) of its attribution phase, reset after
model load via /proc/self/clear_refs (so it includes the resident model, but not
the dequantizing load's own peak, reported apart as load_peak_rss_mib);
ru_maxrss_mib is the whole process's peak, load included.
Per result also baseline_logprob = target at the all-baseline input, so that
sum(scores) - (target_logprob - baseline_logprob) is the completeness gap (Captum's
delta). For clean per-method peaks run each method in its own process (--only M),
as run.sh does, then merge with --merge.

Usage:
  python gradients.py --gguf PATH --sentences tests/fixtures/sentences.jsonl \
      [--limit N] [--threads 2] [--steps 32] [--only M[,M..]] [--out FILE.json]
  python gradients.py --merge A.json B.json ... --out ALL.json
"""
import argparse
import importlib.metadata as md
import json
import os
import re
import resource
import sys
import time

METHODS = ["captum_lig", "captum_ixg", "captum_ablation", "inseq_ig", "inseq_ixg"]
BASELINE_TOKEN = "<|endoftext|>"
DOCUMENT_START = "<|endoftext|>"  # the same id as the baseline: position 0 never moves


def vm_kib(field):
    m = re.search(rf"^{field}:\s+(\d+) kB", open("/proc/self/status").read(), re.M)
    return int(m.group(1))


def reset_peak_rss():
    """Make VmHWM restart from the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def version(pkg):
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def summarize(results):
    out = {}
    for r in results:
        s = out.setdefault(r["method"], {"n": 0, "times": [], "errors": 0})
        if r.get("error"):
            s["errors"] += 1
        else:
            s["times"].append(r["seconds"])
    for m, s in out.items():
        t = s.pop("times")
        s["mean_s"] = sum(t) / len(t) if t else None
        s["max_s"] = max(t) if t else None
        s["n"] = len(t)
    return out


def table(summary):
    rows = ["| method | n | mean s | max s | peak RSS MiB | load 1m |", "|---|---|---|---|---|---|"]
    for m in METHODS:
        s = summary.get(m)
        if not s:
            continue
        f = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        rows.append(f"| {m} | {s['n']} | {f(s['mean_s'], 3)} | {f(s['max_s'], 3)} | "
                    f"{f(s.get('peak_rss_mib'), 0)} | {f(s.get('loadavg_1m_after'), 1)} |")
    return "\n".join(rows)


def make_runners(model, tok, steps):
    """One function per method: (ids list, target id) -> (scores, delta)."""
    import torch
    from captum.attr import (FeatureAblation, InputXGradient,
                             LayerIntegratedGradients)

    base_id = tok.convert_tokens_to_ids(BASELINE_TOKEN)

    def target_from_ids(input_ids, target_id):
        logits = model(input_ids=input_ids, use_cache=False).logits
        return torch.log_softmax(logits[:, -1], dim=-1)[:, target_id]

    def target_from_embeds(embeds, target_id):
        logits = model(inputs_embeds=embeds, use_cache=False).logits
        return torch.log_softmax(logits[:, -1], dim=-1)[:, target_id]

    lig = LayerIntegratedGradients(target_from_ids, model.model.embed_tokens)
    ixg = InputXGradient(target_from_embeds)
    abl = FeatureAblation(target_from_ids)

    def captum_lig(ids, tid):
        x = torch.tensor([ids])
        attr, delta = lig.attribute(x, baselines=torch.full_like(x, base_id),
                                    additional_forward_args=(tid,), n_steps=steps,
                                    method="gausslegendre", internal_batch_size=steps,
                                    return_convergence_delta=True)
        return attr[0].sum(-1).tolist()[1:], float(delta[0])

    def captum_ixg(ids, tid):
        emb = model.model.embed_tokens(torch.tensor([ids])).detach().requires_grad_()
        attr = ixg.attribute(emb, additional_forward_args=(tid,))
        return attr[0].sum(-1).tolist()[1:], None

    def captum_ablation(ids, tid):
        x = torch.tensor([ids])
        with torch.no_grad():
            attr = abl.attribute(x, baselines=base_id, additional_forward_args=(tid,))
        return attr[0].float().tolist()[1:], None

    runners = {"captum_lig": captum_lig, "captum_ixg": captum_ixg,
               "captum_ablation": captum_ablation}

    def inseq_runner(method, kwargs):
        import inseq
        state = {}

        def run(ids, tid):
            if "m" not in state:  # wrap lazily: inseq touches the tokenizer
                state["m"] = inseq.load_model(model, method, tokenizer=tok)
            text = tok.decode(ids)
            out = state["m"].attribute(text, text + tok.decode([tid]), method=method,
                                       show_progress=False, attribute_target=False,
                                       attributed_fn="probability", logprob=True,
                                       **kwargs)
            seq = out.sequence_attributions[0]
            got = [t.id for t in seq.target]
            if got != ids + [tid]:
                raise RuntimeError(f"inseq re-tokenized differently: {got} vs {ids + [tid]}")
            # decoder-only: target_attributions is [prefix+gen, steps=1, hidden]
            return seq.target_attributions[1 : len(ids), 0].sum(-1).tolist(), None

        return run

    runners["inseq_ig"] = inseq_runner("integrated_gradients",
                                       {"n_steps": steps, "internal_batch_size": steps})
    runners["inseq_ixg"] = inseq_runner("input_x_gradient", {})
    return runners


def bench(args):
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantizer's progress bar
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    methods = args.only.split(",") if args.only else METHODS
    bad = [m for m in methods if m not in METHODS]
    if bad:
        sys.exit(f"unknown method(s) {bad}; known: {METHODS}")
    sents = [json.loads(l) for l in open(args.sentences) if l.strip()]
    sents = sents[: args.limit] if args.limit else sents

    d, name = os.path.split(os.path.abspath(args.gguf))
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    rss_loaded = vm_kib("VmRSS") / 1024
    load_peak = vm_kib("VmHWM") / 1024  # before any reset: the load's own peak

    prepared = []
    with torch.no_grad():
        for s in sents:
            start = tok.convert_tokens_to_ids(DOCUMENT_START)
            ids = [start] + tok(s["input"], add_special_tokens=False)["input_ids"]
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids]), use_cache=False)
                                   .logits[0, -1], dim=-1)
            tid = int(lp.argmax())
            base = torch.full((1, len(ids)), tok.convert_tokens_to_ids(BASELINE_TOKEN))
            blp = torch.log_softmax(model(input_ids=base, use_cache=False).logits[0, -1], -1)
            prepared.append((s, ids, tid, float(lp[tid]), float(blp[tid])))

    runners = make_runners(model, tok, args.steps)
    results, peaks, loads = [], {}, {}
    for m in methods:
        run = runners[m]
        reset_peak_rss()
        err = None
        try:
            run(prepared[0][1], prepared[0][2])  # untimed warm-up
        except Exception as e:  # record and go on (e.g. a peer API mismatch)
            err = f"{type(e).__name__}: {e}"
        for s, ids, tid, lp, blp in prepared:
            r = {"sentence": s["id"], "tokens": tok.convert_ids_to_tokens(ids), "ids": ids,
                 "target_id": tid, "target_piece": tok.decode([tid]), "target_logprob": lp,
                 "baseline_logprob": blp, "method": m}
            if err:
                r.update(error=err, seconds=None, scores=None, delta=None)
            else:
                try:
                    t = time.perf_counter()
                    scores, delta = run(ids, tid)
                    r.update(seconds=time.perf_counter() - t, scores=scores, delta=delta,
                             loadavg_1m=os.getloadavg()[0])  # > threads: contended sample
                except Exception as e:
                    r.update(error=f"{type(e).__name__}: {e}", seconds=None, scores=None,
                             delta=None)
            results.append(r)
            print(f"{m} {s['id']} {r['seconds'] if r['seconds'] is None else round(r['seconds'], 3)}"
                  f"{' ERROR ' + r['error'] if r.get('error') else ''}", file=sys.stderr, flush=True)
        peaks[m] = vm_kib("VmHWM") / 1024
        loads[m] = os.getloadavg()[0]

    summary = summarize(results)
    for m, p in peaks.items():
        summary[m]["peak_rss_mib"] = p
        summary[m]["loadavg_1m_after"] = loads[m]  # > threads: the timings were contended
    return {
        "cpu": cpu_name(), "threads": args.threads,
        "torch": torch.__version__, "transformers": version("transformers"),
        "captum": version("captum"), "inseq": version("inseq"),
        "model": os.path.abspath(args.gguf), "steps": args.steps,
        "baseline_token": BASELINE_TOKEN, "load_s": load_s,
        "rss_after_load_mib": rss_loaded,
        "load_peak_rss_mib": load_peak,
        # clear_refs also resets ru_maxrss, so fold the load's peak back in
        "ru_maxrss_mib": max([load_peak, *peaks.values(),
                              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]),
        "notes": "captum_lig/inseq_ig: all steps in one internal batch; "
                 "peak_rss_mib = VmHWM of the attribution phase (model resident included)",
        "results": results, "summary": summary,
    }


def merge(paths):
    docs = [json.load(open(p)) for p in paths]
    out = {k: v for k, v in docs[0].items() if k not in ("results", "summary")}
    out["results"], out["summary"] = [], {}
    out["ru_maxrss_mib"] = {}
    for d in docs:
        out["results"] += d["results"]
        out["summary"].update(d["summary"])
        for m in d["summary"]:
            out["ru_maxrss_mib"][m] = d["ru_maxrss_mib"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf")
    ap.add_argument("--sentences")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--only", help=f"comma list of {','.join(METHODS)}")
    ap.add_argument("--out")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="merge per-method outputs")
    args = ap.parse_args()
    if args.merge:
        doc = merge(args.merge)
    else:
        if not (args.gguf and args.sentences):
            ap.error("--gguf and --sentences are required")
        doc = bench(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    print(table(doc["summary"]))


if __name__ == "__main__":
    main()
