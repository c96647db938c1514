#!/usr/bin/env bash
# Installs the app and starts it on http://127.0.0.1:7860 (the local sandbox when no pool is configured).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh app
export GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python app.py "$@"
