#!/usr/bin/env bash
# Peer gradient benchmark for issue 11 ("integrated gradients >= 2.5x faster than
# Captum"): sets up the venv if missing, then runs gradients.py once per method,
# each in its own process so each method's peak RSS is its own, and merges the
# per-method JSONs into $OUT (default /tmp/peers-gradients.json).
#
# Env: VENV (/tmp/peers-venv), GGUF (the SmolLM2-135M-Instruct Q4_1 in the Glassbox
# cache), SENTENCES (tests/fixtures/sentences.jsonl, 20 sentences), THREADS (2),
# STEPS (32), LIMIT (0 = all), METHODS (all five), OUT.
# Smoke: LIMIT=2 tools/peers/run.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${VENV:-/tmp/peers-venv}"
GGUF="${GGUF:-$HOME/.cache/glassbox/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
SENTENCES="${SENTENCES:-$ROOT/tests/fixtures/sentences.jsonl}"
THREADS="${THREADS:-2}"
STEPS="${STEPS:-32}"
LIMIT="${LIMIT:-0}"
METHODS="${METHODS:-captum_lig captum_ixg captum_ablation inseq_ig inseq_ixg}"
OUT="${OUT:-/tmp/peers-gradients.json}"

[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import captum, inseq' 2>/dev/null \
    || VENV="$VENV" "$HERE/setup.sh"

parts=()
for m in $METHODS; do
    part="${OUT%.json}.$m.json"
    "$VENV/bin/python" "$HERE/gradients.py" --gguf "$GGUF" --sentences "$SENTENCES" \
        --limit "$LIMIT" --threads "$THREADS" --steps "$STEPS" --only "$m" --out "$part"
    parts+=("$part")
done
"$VENV/bin/python" "$HERE/gradients.py" --merge "${parts[@]}" --out "$OUT"
echo "wrote $OUT"
