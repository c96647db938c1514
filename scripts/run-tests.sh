#!/usr/bin/env bash
# Installs everything the tests need (chromium and bubblewrap included) and runs lint plus the whole test suite, then
# the Space stage: the sandbox, the emulator and the app again under a Hugging Face Space's conditions (needs root).
# Arguments go to pytest and skip the Space stage (e.g. `scripts/run-tests.sh tests/unit -q`).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test || exit 1
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 NO_PROXY="localhost,127.0.0.1" PYTHONDONTWRITEBYTECODE=1
.venv/bin/ruff check . || exit 1
.venv/bin/ruff format --check . || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "run-tests: pytest collected no tests; that is a failure" >&2; exit 1; fi
[ $rc -eq 0 ] || exit $rc
# The same tests where a Hugging Face Space runs: uid 1000, no user namespaces, secrets in the environment.
if [ $# -eq 0 ]; then
  bash scripts/space-stage.sh
  rc=$?
  if [ $rc -eq 5 ]; then echo "run-tests: the Space stage collected no tests; that is a failure" >&2; exit 1; fi
fi
exit $rc
