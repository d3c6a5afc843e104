#!/usr/bin/env bash
# Issue 4: does the tiny default learn the *matching* step (candidate term vs profile -> score) when it gets
# many more optimizer steps than the 2-core machine allows? Runs on the lent GPU, each stage with its own
# time limit, each reporting as it ends:
#   1. the synthetic data in two CoT formats: describe_candidates=terms and =sections (the default);
#   2. the text-only matching probe (research/match_probe.py) on each format, many steps, in the background;
#   3. align + CoT SFT on the sections format with several epochs, then the teacher-forced CoT probe and a
#      100-pair evaluation on SP_ID and MP_OD.
# Usage on the lent machine (wheels for trl/datasets/hydra carried in .whl/, see benchmarks/README.md):
#   bash research/gpu_tiny_longrun.sh [PROBE_STEPS=4000] [SFT_EPOCHS=3]   -> $OUT/*.json, $OUT/*.log
set -uo pipefail
STEPS=${1:-4000}
EPOCHS=${2:-3}
source "$(dirname "${BASH_SOURCE[0]}")/../benchmarks/gpu_env.sh"   # $OUT, PYTHONPATH, say
for FMT in terms sections; do
  python3 scripts/make_data.py out_dir=/tmp/syn_$FMT run_dir=/tmp/syn_${FMT}_run describe_candidates=$FMT workers=12 \
    contact_sheets=false progress=false > "$OUT/make_data_$FMT.log" 2>&1 || { tail -20 "$OUT/make_data_$FMT.log"; exit 1; }
  say "data $FMT made"
done
# align stage (also builds the tiny model with whole-word term tokens from the sections data)
P=/tmp/pipe
timeout 150 python3 scripts/run_pipeline.py run_dir=$P data_dir=/tmp/syn_sections tiny_model=/tmp/tiny "stages=[align]" \
  > "$OUT/align.log" 2>&1; say "align exit $?"; grep -E "SFT done|Error" "$OUT/align.log" | tail -3
for FMT in terms sections; do
  timeout 400 python3 research/match_probe.py --model /tmp/tiny --data /tmp/syn_$FMT/train/sft.jsonl --steps $STEPS \
    --eval-every 250 --device cuda --json "$OUT/match_$FMT.json" > "$OUT/match_$FMT.log" 2>&1 &
done
timeout 230 python3 scripts/run_pipeline.py run_dir=$P data_dir=/tmp/syn_sections tiny_model=/tmp/tiny "stages=[align,sft]" \
  "sft=['trainer.num_train_epochs=$EPOCHS','trainer.per_device_train_batch_size=32','trainer.save_steps=200']" > "$OUT/sft.log" 2>&1
say "sft exit $?"; grep -E "SFT done|Error|error" "$OUT/sft.log" | tail -3
M=$P/sft/final
[ -f $M/config.json ] || M=$(ls -d $P/sft/checkpoints/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tail -1)
say "model $M"
cp $P/sft/results.json "$OUT/sft_results.json" 2>/dev/null; cp $P/sft/learning_curve.png "$OUT/" 2>/dev/null
timeout 60 python3 research/cot_probe.py $M --data /tmp/syn_sections/train/sft.jsonl --n 64 --json "$OUT/cot_probe.json" 2>&1 | grep -v Warn | tail -14
timeout 100 python3 scripts/eval.py model.path=$M data.root=/tmp/syn_sections bench.max_samples=100 "data.eval_subsets=[SP_ID,MP_OD]" \
  "systems=[model]" metrics.similarity=false run_dir=/tmp/eval > "$OUT/eval.log" 2>&1
say "eval exit $?"; cp /tmp/eval/results.json "$OUT/eval_results.json" 2>/dev/null
grep -E "accuracy|SP_ID|MP_OD" "$OUT/eval.log" | tail -12
wait
say "probes done"; for FMT in terms sections; do grep step "$OUT/match_$FMT.log" | tail -4; done
