#!/usr/bin/env bash
# The main job (README): set up everything, then run CHEX on Fashion-MNIST end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --data
.venv/bin/python scripts/demo_chex.py "$@"
