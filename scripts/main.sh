#!/usr/bin/env bash
# The main job (README): set up everything, then run a real small CHEX sweep on Fashion-MNIST:
# local Ray, local MLflow store under mlflow/, Optuna multi-objective search; prints the Pareto front.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --data
export MLFLOW_DISABLE_TELEMETRY=true
.venv/bin/chex-tune sweep search_spaces/fashion_mnist_resnet18.yaml --trials 8 --concurrent 2 "$@"
