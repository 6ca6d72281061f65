#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Converted model and built indexes are cached here between runs (RAGR1_HOME).
export RAGR1_HOME=${RAGR1_HOME:-$PWD/.ragr1-cache}
exec .venv/bin/python -m pytest -q "$@"
