#!/usr/bin/env bash
# Set up, then run every stage on the built-in demo sample:
# train -> evaluate -> export -> transcribe. Outputs go to runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python
DATA=demo/speech_commands_sample
RUN=runs/demo
$PY scripts/train.py --config configs/demo.yaml --data "$DATA" --out "$RUN" --quiet
$PY scripts/evaluate.py --model "$RUN" --data "$DATA" | tail -n 1
