#!/usr/bin/env python3
"""Sentence refinement on cached passages against the exact refinement, on long RAG cases.

Runs `glassbox cite --batch` twice on the first N cases of tests/fixtures/rag_long.jsonl:
exact leave-one-out with `--refine 1` (each sentence-level coalition run as written), and the
same with `--strategy context-kv` (the sentence level cut from the passages' caches). Then, per
case: whether both refined the same passage, the sentence level's Spearman and top sentence
against the exact one, the largest score difference, and each level's time. Standard library
only; prints a Markdown table.

    python3 tools/bench/compare_refinements.py --cases 6 --threads 2 [--refresh 512]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va > 0 and vb > 0 else float("nan")


def run(glassbox, cases, threads, extra, out):
    cmd = [glassbox, "--threads", str(threads), "cite", "--batch", cases, "-M", "loo",
           "--refine", "1", "-o", out, "--force"] + extra
    print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return [json.loads(line)["report"] for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glassbox", default=os.path.join(ROOT, "target/release/glassbox"))
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--refresh", type=int, default=0)
    args = ap.parse_args()

    with open(os.path.join(ROOT, "tests/fixtures/rag_long.jsonl")) as f:
        lines = [line for line in f if line.strip()][: args.cases]
    with tempfile.TemporaryDirectory() as tmp:
        cases = os.path.join(tmp, "cases.jsonl")
        with open(cases, "w") as f:
            for line in lines:
                case = json.loads(line)
                case.pop("kind", None)
                case.pop("gold", None)
                f.write(json.dumps(case) + "\n")
        exact = run(args.glassbox, cases, args.threads, [], os.path.join(tmp, "exact.jsonl"))
        strategy = ["--strategy", "context-kv", "--refresh", str(args.refresh)]
        cached = run(args.glassbox, cases, args.threads, strategy,
                     os.path.join(tmp, "cached.jsonl"))

    print(f"| case | refined passage (exact, context-kv) | sentences | Spearman | top sentence "
          f"| largest difference (nats) | exact level: s | context-kv level: s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rhos, tops, same, t_exact, t_cached = [], [], 0, [], []
    for line, e, c in zip(lines, exact, cached):
        case = json.loads(line)["id"]
        re_, rc = e["refinements"][0], c["refinements"][0]
        se, sc = re_["attribution"]["scores"][0], rc["attribution"]["scores"][0]
        te, tc = re_["attribution"]["cost"]["seconds"], rc["attribution"]["cost"]["seconds"]
        t_exact.append(te)
        t_cached.append(tc)
        if re_["parent_unit"] != rc["parent_unit"]:
            print(f"| {case} | {re_['parent_unit'] + 1}, {rc['parent_unit'] + 1} | | | | "
                  f"| {te:.1f} | {tc:.1f} |")
            continue
        same += 1
        rho = spearman(se, sc)
        top = max(range(len(se)), key=lambda i: se[i]) == max(range(len(sc)), key=lambda i: sc[i])
        diff = max(abs(x - y) for x, y in zip(se, sc))
        rhos.append(rho)
        tops.append(top)
        print(f"| {case} | {re_['parent_unit'] + 1}, {rc['parent_unit'] + 1} | {len(se)} "
              f"| {rho:.2f} | {'yes' if top else 'no'} | {diff:.3f} | {te:.1f} | {tc:.1f} |")
    n = len(lines)
    print(f"\nSame refined passage {same}/{n}; on those, mean Spearman "
          f"{sum(rhos) / max(len(rhos), 1):.2f}, top sentence {sum(tops)}/{len(tops)}; "
          f"sentence level {sum(t_exact) / n:.1f} s exact, {sum(t_cached) / n:.1f} s on the caches "
          f"(refresh {args.refresh}).")


if __name__ == "__main__":
    main()
