#!/usr/bin/env bash
# Issue 24's GPU check: the recipes as launched (torchrun + DeepSpeed ZeRO-2/3), project against vanilla TRL, same
# model, data and prompt shape, one JSON with every goal and its ratio (benchmarks/recipe_speed.py).
# Usage on the lent machine (wheels for trl/datasets/deepspeed/hydra carried as in benchmarks/README.md):
#   bash benchmarks/gpu_recipes.sh [STAGES] [RUNS]   e.g.  bash benchmarks/gpu_recipes.sh zero2
#                                                           bash benchmarks/gpu_recipes.sh zero3 grpo_project,grpo_vanilla
# -> $OUT/recipes_<STAGES>.json (+ one log per launch). One H200 and a 10-minute command limit hold about one stage
# per call: the 7B GRPO pair takes ~5 min (4 steps each, vanilla ~30 s a step), the 3B SFT pair ~2 min.
set -uo pipefail
STAGES=${1:-zero2}
RUNS=${2:-grpo_project,grpo_vanilla,sft_project,sft_vanilla}
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"   # $OUT, PYTHONPATH, say
NPROC=$(python3 -c "import torch; print(torch.cuda.device_count())")
say "recipes: stages=$STAGES runs=$RUNS on $NPROC GPU(s)"
python3 benchmarks/gpu_speed.py --mode recipes --nproc "$NPROC" --stages "$STAGES" --runs "$RUNS" --work /tmp/recipes \
  --timeout-s 300 --budget-s 500 --out "$OUT/recipes_${STAGES//,/_}.json"
rc=$?
for f in /tmp/recipes/*.log; do cp "$f" "$OUT/" 2>/dev/null; done
say "exit $rc"
exit $rc
