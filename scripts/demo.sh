#!/usr/bin/env bash
# Set up, then run every stage on the built-in demo sample:
# train -> evaluate -> export -> transcribe. Outputs go to runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
DATA=demo/speech_commands_sample
RUN=runs/demo
$PY scripts/train.py --config configs/demo.yaml --data "$DATA" --out "$RUN" --quiet
$PY scripts/evaluate.py --model "$RUN" --data "$DATA" | tail -n 1
$PY scripts/export.py --model "$RUN"
$PY scripts/evaluate.py --model "$RUN/export/model_int8.tflite" --data "$DATA" | tail -n 1
# a 2-minute recording made of the demo's test clips over background noise, with its ground truth
$PY scripts/make_stream.py --clips "$DATA" --split test --noise "$DATA/_background_noise_" \
    --minutes 2 --out "$RUN/stream/demo_stream.wav"
$PY scripts/transcribe.py --model "$RUN/export" \
    "$DATA/yes" "$DATA/no" "$RUN/stream/demo_stream.wav" \
    --out "$RUN/transcript.csv" --plot "$RUN/plots"
$PY scripts/score_stream.py --truth "$RUN/stream/demo_stream_truth.csv" --results "$RUN/transcript.csv" | tail -n 1
echo "transcript: $RUN/transcript.csv; timeline plot: $RUN/plots/"
# The demo model has seen 155 clips; the bundled one (models/pretrained) thousands. Both on the
# demo's test clips, whose speakers neither was trained on:
grep -E "^(yes|no|up|down|left|right|on|off|stop|go)/" "$DATA/testing_list.txt" | sed "s#^#$DATA/#" \
    > "$RUN/held_out.txt"
$PY scripts/transcribe.py --model "$RUN/export" "@$RUN/held_out.txt" --out "$RUN/held_out_demo.csv"
$PY scripts/transcribe.py "@$RUN/held_out.txt" --out "$RUN/held_out_pretrained.csv"
$PY scripts/compare_transcripts.py "$RUN/held_out_demo.csv" "$RUN/held_out_pretrained.csv"
