#!/usr/bin/env bash
# Create .venv in the repository and install the project with training, plotting, test and
# Ray tools (`pip install .` alone is the TensorFlow-free runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[train,plot,test,distributed]"
