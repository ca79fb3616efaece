#!/usr/bin/env bash
# The GPU checks in one short run, for a lent GPU machine: tests/gpu (bf16 autocast and channels_last through
# masking and compaction, masked = compact on CUDA, GPU-trained = CPU-scored, two trials on one GPU).
#
# That machine has torch with CUDA, timm and numpy, and no package registry. Prepare the other wheels here
# (an ignored folder, well under the 64 MiB a call carries), then run from the repository root there:
#   .venv/bin/pip download --no-deps -d wheels torch-pruning pyyaml pytest pytest-timeout iniconfig pluggy
#   bash scripts/gpu_check.sh          # on the GPU machine, with wheels/ carried along
# Ray, Optuna and MLflow are too large to carry; without them the shared-GPU sweep check is left out, and
# this script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
if [ -d wheels ]; then
  python -m pip install --quiet --no-index --find-links wheels --no-deps wheels/*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
select=()
if ! python -c "import ray, optuna, mlflow" 2>/dev/null; then
  echo "ray/optuna/mlflow missing here: the shared-GPU sweep check (two trials at 0.5 GPU) does not run" >&2
  select=(-k "not share_one_gpu")
fi
python -m pytest -m gpu tests/gpu -v -p no:cacheprovider "${select[@]}"
