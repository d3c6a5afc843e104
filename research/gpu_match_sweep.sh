#!/usr/bin/env bash
# Issue 4: which settings make the tiny language model learn the matching step in fewer steps? Runs
# research/match_probe.py (text only, describe_candidates=sections responses) in parallel on the lent GPU
# over learning rate, batch, depth and heads, plus the dense per-section rows, and prints each curve.
# Usage on the lent machine (wheels carried in .whl/, see benchmarks/README.md):
#   bash research/gpu_match_sweep.sh [STEPS=2000]   -> $OUT/sweep_<name>.json
set -uo pipefail
STEPS=${1:-2000}
source "$(dirname "${BASH_SOURCE[0]}")/../benchmarks/gpu_env.sh"   # $OUT, PYTHONPATH, say
python3 scripts/make_data.py out_dir=/tmp/syn run_dir=/tmp/syn_run describe_candidates=sections workers=12 users.SP_ID=10 \
  users.SP_OD=10 users.MP_ID=10 users.MP_OD=10 contact_sheets=false progress=false > "$OUT/make_data.log" 2>&1 || { tail -20 "$OUT/make_data.log"; exit 1; }
say "data made"
python3 - <<'PY' || exit 1
from preferthinker.data.loading import PromptSpec, corpus_for_tokenizer, profile_terms
from preferthinker.data.schema import load_train_jsonl
from preferthinker.modeling import build_tiny_model
recs = load_train_jsonl("/tmp/syn/train/sft.jsonl")
texts, terms = corpus_for_tokenizer(recs, PromptSpec(style="compact", system="compact")), profile_terms(recs)
for name, kw in {"base": {}, "l6": {"text_layers": 6}, "h8": {"num_heads": 8, "num_kv_heads": 4}, "w192": {"hidden_size": 192, "num_heads": 6, "num_kv_heads": 2, "intermediate_size": 768}}.items():
    build_tiny_model(f"/tmp/tiny_{name}", texts, word_tokens=terms, **kw)
PY
say "models built"
run() {  # name model extra-args...
  local name=$1 model=$2; shift 2
  timeout 300 python3 research/match_probe.py --model /tmp/tiny_$model --data /tmp/syn/train/sft.jsonl --steps $STEPS \
    --eval-every 250 --device cuda --json "$OUT/sweep_$name.json" "$@" > "$OUT/sweep_$name.log" 2>&1 &
}
run lr2e-3 base --lr 2e-3
run lr5e-3 base --lr 5e-3
run lr1e-2 base --lr 1e-2
run b64-lr5e-3 base --lr 5e-3 --batch 64
run dense-lr5e-3 base --lr 5e-3 --batch 64 --sections-only
run l6-lr5e-3 l6 --lr 5e-3
run h8-lr5e-3 h8 --lr 5e-3
run w192-lr3e-3 w192 --lr 3e-3
wait
say "sweep done"
for f in "$OUT"/sweep_*.log; do
  echo "== $(basename "$f" .log)"; grep '"step"' "$f" | grep -v curve | python3 -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin]
print(' '.join(f\"{r['step']}:{r['score']:.2f}\" for r in rows), '| s', rows[-1]['s'] if rows else '-')"
done
