#!/usr/bin/env bash
# Issue 6's GPU check: evaluation samples/s of scripts/eval.py on a Qwen2.5-VL-7B-shaped model (random bf16
# weights), plain batched `model.generate` (generation.engine=hf) against the static-cache greedy engine
# (generation.engine=fast: preferthinker.rollout.FastRollout, CUDA-graph decode step), same harness, same
# samples, same batch size. Every sample is forced to its full length (generation.min_new_tokens) so that both
# engines generate the same number of tokens whatever the random weights emit.
# Usage on the lent machine (wheels for trl/datasets/hydra carried in .whl/, see benchmarks/README.md):
#   bash benchmarks/gpu_eval.sh [PAIRS=16] [NEW_TOKENS=256] [BATCH=8]   -> $OUT/eval_{hf,fast}.json, $OUT/gpu_eval.json
set -uo pipefail
PAIRS=${1:-16}
NEW=${2:-256}
BATCH=${3:-8}
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"   # $OUT, PYTHONPATH, say
python3 scripts/make_data.py out_dir=/tmp/syn448 run_dir=/tmp/syn448_run image_size=448 users.train_sft=16 users.train_grpo=2 \
  users.SP_ID=$PAIRS users.SP_OD=1 users.MP_ID=1 users.MP_OD=1 contact_sheets=false progress=false workers=8 > "$OUT/make_data.log" 2>&1 \
  || { tail -20 "$OUT/make_data.log"; exit 1; }
say "data made"
if [ ! -f /tmp/qwen7b/config.json ]; then
  python3 - <<'PY' || exit 1
from preferthinker.modeling import build_tiny_model
from preferthinker.data.loading import PromptSpec, corpus_for_tokenizer
from preferthinker.data.schema import load_train_jsonl
recs = load_train_jsonl("/tmp/syn448/train/sft.jsonl")
build_tiny_model("/tmp/tinyproc", corpus_for_tokenizer(recs, PromptSpec(style="official", system="official")), min_pixels=3136, max_pixels=448 * 448)
PY
  python3 benchmarks/make_shaped_checkpoint.py --processor-from /tmp/tinyproc --out /tmp/qwen7b --shape "${SHAPE:-7b}" || exit 1
  say "7B-shaped checkpoint written"
fi
for ENGINE in hf fast; do
  rm -rf /tmp/eval_$ENGINE
  timeout 300 python3 scripts/eval.py model=qwen2_5_vl_7b model.path=/tmp/qwen7b model.max_pixels=200704 data.root=/tmp/syn448 \
    data.eval_subsets=[SP_ID] systems=[model] metrics.similarity=false prompt.style=official prompt.system=official \
    generation.engine=$ENGINE generation.batch_size=$BATCH generation.max_new_tokens=$NEW generation.min_new_tokens=$NEW \
    run_dir=/tmp/eval_$ENGINE > "$OUT/eval_$ENGINE.log" 2>&1
  rc=$?
  say "engine=$ENGINE exit $rc"; grep -E "samples_per_s|engine|Error|error" "$OUT/eval_$ENGINE.log" | tail -5
  cp /tmp/eval_$ENGINE/results.json "$OUT/eval_$ENGINE.json" 2>/dev/null
done
python3 - "$OUT" "$PAIRS" "$NEW" "$BATCH" <<'PY'
import json, sys, torch, transformers
out, pairs, new, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
res = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
       "pairs": pairs, "samples": 2 * pairs, "new_tokens": new, "batch_size": batch}
raws = {}
for e in ("hf", "fast"):
    try:
        r = json.load(open(f"{out}/eval_{e}.json"))
        res[e] = {k: r.get(k) for k in ("samples_per_s", "samples_per_s_after_first_batch", "first_batch_s", "timing_s")}
        rows = [json.loads(l) for l in open(f"/tmp/eval_{e}/predictions/model/SP_ID.rank0.jsonl")]
        raws[e] = {(x["index"], x["swapped"]): x["raw"] for x in rows}
    except Exception as err:  # a failed engine is recorded, not fatal
        res[e] = {"error": f"{type(err).__name__}: {err}"}
if len(raws) == 2:
    keys = sorted(set(raws["hf"]) & set(raws["fast"]))
    res["identical_responses"] = sum(raws["hf"][k] == raws["fast"][k] for k in keys)
    res["compared"] = len(keys)
json.dump(res, open(f"{out}/gpu_eval.json", "w"), indent=1)
print(json.dumps(res, indent=1))
PY
say "done"
