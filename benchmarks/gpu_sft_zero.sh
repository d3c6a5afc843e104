#!/usr/bin/env bash
# Issue 4's GPU check: the SFT recipe itself (scripts/train_sft.py, TRL SFTTrainer, DeepSpeed through
# torchrun) on a Qwen2.5-VL-7B-shaped model with random weights, ZeRO-2 then ZeRO-3, on one GPU.
# LoRA (r=16, language model) with gradient checkpointing: full fine-tuning of 8.3 B parameters with fp32
# Adam states needs ~133 GB on one card, which does not fit next to activations even on an H200.
# Usage on the lent machine (wheels for trl/datasets/deepspeed/hydra carried in .whl/):
#   bash benchmarks/gpu_sft_zero.sh [STEPS]        -> $OUT/sft_zero2.json, $OUT/sft_zero3.json
set -uo pipefail
STEPS=${1:-8}
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"   # $OUT, PYTHONPATH, say
python3 scripts/make_data.py out_dir=/tmp/syn448 run_dir=/tmp/syn448_run image_size=448 users.train_sft=48 users.train_grpo=4 \
  users.SP_ID=2 users.SP_OD=2 users.MP_ID=2 users.MP_OD=2 contact_sheets=false progress=false workers=8 > "$OUT/make_data.log" 2>&1 || { tail -20 "$OUT/make_data.log"; exit 1; }
say "data made"
python3 - <<'PY' || exit 1
from preferthinker.modeling import build_tiny_model
from preferthinker.data.loading import PromptSpec, corpus_for_tokenizer
from preferthinker.data.schema import load_train_jsonl
recs = load_train_jsonl("/tmp/syn448/train/sft.jsonl")
build_tiny_model("/tmp/tinyproc", corpus_for_tokenizer(recs, PromptSpec(style="compact", system="compact")), min_pixels=3136, max_pixels=448 * 448)
PY
python3 benchmarks/make_shaped_checkpoint.py --processor-from /tmp/tinyproc --out /tmp/qwen7b --shape 7b || exit 1
say "7B-shaped checkpoint written"
for Z in zero2 zero3; do
  timeout 240 python3 -m torch.distributed.run --nproc_per_node 1 --master_port 29601 scripts/train_sft.py model=qwen2_5_vl_7b curriculum=none model.path=/tmp/qwen7b \
    model.max_pixels=200704 data.root=/tmp/syn448 data.val_samples=0 data.align_per_record=0 deepspeed=$Z peft=lora logger=none \
    trainer.max_steps=$STEPS trainer.per_device_train_batch_size=2 trainer.gradient_checkpointing=true trainer.save_strategy=no \
    trainer.learning_rate=1e-4 trainer.logging_steps=1 merge_lora=false run_dir=/tmp/run_$Z > "$OUT/sft_$Z.log" 2>&1
  say "$Z exit $?"; tail -3 "$OUT/sft_$Z.log"
  cp /tmp/run_$Z/results.json "$OUT/sft_$Z.json" 2>/dev/null && cat "$OUT/sft_$Z.json"
done
