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

if [ "${1:-}" = "--data" ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  echo "[setup] installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
