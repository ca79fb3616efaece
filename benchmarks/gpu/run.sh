#!/usr/bin/env bash
# One device call: the GPU checks, then GPU-protocol rows (30 epochs, all 55k images), each row saved as it ends.
set -uo pipefail
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl && export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; lscpu | grep "Model name";
  python3 -c "import torch,timm,torch_pruning as tp;print('torch',torch.__version__,'timm',timm.__version__,'tp',tp.__version__)"; } 2>&1 | tee $OUT/machine.txt
timeout 150 bash scripts/gpu_check.sh > $OUT/gpu_check.log 2>&1
echo "gpu_check rc=$? at $(( $(date +%s) - start )) s"; tail -15 $OUT/gpu_check.log
export PYTHONPATH=$PWD:$PYTHONPATH
timeout $(( ${BUDGET:-330} - ($(date +%s) - start) )) python3 scripts/gpu_rows.py cuda dense CHEX@0.03 CHEX@0.25 2>&1 | tee $OUT/rows.log | grep -v "^$" | tail -80
echo "rows rc=${PIPESTATUS[0]} at $(( $(date +%s) - start )) s"
