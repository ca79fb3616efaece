#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a venv in .venv with chex-tune and its dev/tune extras,
# pinned for CPU machines. With --data it also installs Fashion-MNIST from Debian's package.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "[setup] installing chex-tune (editable) with pinned CPU torch"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-cpu.txt -e ".[dev,tune]"

# The registry's torchvision is a CUDA build: next to CPU torch its ops do not load and a plain `import timm`
# fails ("operator torchvision::nms does not exist"). This .pth file, in this venv only, makes every interpreter
# of the venv import chex_tune at start (cheap: no torch), which applies the guarded fix at the first import of
# torchvision (chex_tune/_torchvision_fix.py; it does nothing where torchvision's ops load).
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\n' 'import sys; exec("try:\n    import chex_tune  # torchvision import fix, written by chex-tune scripts/setup.sh\nexcept Exception:\n    pass")' \
  > "$SITE/chex_tune_torchvision_fix.pth"

if [ "${1:-}" = "--data" ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  echo "[setup] installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
