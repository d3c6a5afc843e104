#!/usr/bin/env bash
# Create .venv (if missing) and install PreferThinker with its test extras and the web demo ([demo]: Gradio,
# Playwright for the browser test; the browser itself is the system chromium, see .ci/run).
# torch/torchvision are pinned to the releases this project is tested with (2.14.1 / 0.29.1); on a GPU
# cluster install the CUDA build of your choice first, then `pip install -e .[dev]`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[dev,demo]"
.venv/bin/python -c "import preferthinker, torch, transformers, trl; print(f'preferthinker {preferthinker.__version__} | torch {torch.__version__} | transformers {transformers.__version__} | trl {trl.__version__}')"
