#!/usr/bin/env bash
# The test command (README and .ci/run): set up, lint, then the default (fast, CPU) test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true
.venv/bin/ruff check chex_tune tests scripts examples
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
