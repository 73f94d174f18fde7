#!/usr/bin/env python3
"""Compare Glassbox's token scores with the peers' on the same sentences (issue 11).

    glassbox --threads 2 attribute-dataset tests/fixtures/sentences.jsonl \
        -M ig --unit token -o /tmp/gb-ig.jsonl
    python3 tools/peers/compare.py /tmp/peers-gradients.json /tmp/gb-ig.jsonl captum_lig

Both explain the log-probability of the argmax next token after `<|endoftext|>` + the
sentence, from the same baseline (`<|endoftext|>` on the sentence's tokens). Prints, per
sentence, the largest |difference| of the token scores relative to the largest |score|, the
two completeness deltas (Captum's convergence delta vs Glassbox's completeness gap), and the
worst case over all sentences. Standard library only.
"""
import json
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    peers, ours, method = sys.argv[1:]
    theirs = {r["sentence"]: r for r in json.load(open(peers))["results"]
              if r["method"] == method and r.get("scores") is not None}
    worst = 0.0
    rows = 0
    for line in open(ours):
        if not line.strip():
            continue
        item = json.loads(line)
        a = item["report"]["attribution"]
        peer = theirs.get(item["id"])
        if peer is None:
            continue
        mine, other = a["scores"][0], peer["scores"]
        if len(mine) != len(other):
            print(f"{item['id']}: {len(mine)} tokens here, {len(other)} there; skipped")
            continue
        scale = max(abs(v) for v in other) or 1.0
        rel = max(abs(x - y) for x, y in zip(mine, other)) / scale
        gap = a["diagnostics"].get("completeness_gap", [None])[0]
        print(f"{item['id']}: max |Δ| / max |score| = {rel:.2e}; "
              f"completeness: {method} {peer.get('delta')}, glassbox {gap}")
        worst = max(worst, rel)
        rows += 1
    print(f"{rows} sentences; worst max |Δ| / max |score| = {worst:.2e}")


if __name__ == "__main__":
    main()
