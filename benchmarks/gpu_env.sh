# Sourced by the benchmarks/gpu_*.sh and research/gpu_*.sh scripts (not run on its own): the lent GPU machine's environment.
#   $OUT    folder whose files come back from the device tool (created; default /tmp/out)
#   PYTHONPATH  /tmp/site (the carried wheels, unpacked there) + this checkout (+ $EXTRA_PYTHONPATH)
#   say     echo with the seconds since the script started
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=/tmp/site:$PWD${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
