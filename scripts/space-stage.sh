#!/usr/bin/env bash
# The test stage that runs under a Hugging Face Space's conditions: a copy of the checkout owned by uid 1000, installed
# there by the same set-up script the Docker image runs (a venv from the bare system interpreter), then tests run as
# uid 1000 where no user namespace can be created (so bubblewrap cannot start and the Landlock tier must hold), with
# canary secrets in the environment. Run as root (run-tests.sh calls it). Usage: scripts/space-stage.sh [PYTEST ARGS]
set -uo pipefail
cd "$(dirname "$0")/.."
checkout=$(pwd)
SPACE_UID=1000

if [ "$(id -u)" -ne 0 ]; then
  echo "space-stage: needs root to run tests as uid $SPACE_UID (sudo bash scripts/run-tests.sh)" >&2
  exit 1
fi

stage=$(mktemp -d /var/tmp/space-stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
mkdir -p "$stage/app" "$stage/home"
tar -C "$checkout" --exclude=./.venv --exclude=./.git --exclude='*/__pycache__' -cf - . | tar -C "$stage/app" -xf -
chown -R "$SPACE_UID:$SPACE_UID" "$stage"

# uid 1000 with no way to create namespaces, its own /tmp (as a container has), and the Space's environment.
as_space() {
  local wrap=(setpriv --reuid "$SPACE_UID" --regid "$SPACE_UID" --clear-groups)
  local jail=(bwrap --unshare-user --disable-userns --dev-bind / / --tmpfs /tmp --chdir "$stage/app" --)
  if ! "${wrap[@]}" "${jail[@]}" true 2>/dev/null; then
    # No user namespaces here at all (a container): the conditions already hold without the wrapper.
    if "${wrap[@]}" unshare -U true 2>/dev/null; then
      echo "space-stage: cannot take away user namespaces on this host (bubblewrap >= 0.8 is needed)" >&2
      return 1
    fi
    jail=(env --chdir="$stage/app" --)
  fi
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$stage/home" LANG=C.UTF-8 \
    GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 NO_PROXY=localhost,127.0.0.1 PYTHONDONTWRITEBYTECODE=1 \
    HF_TOKEN=hf_SpaceStageCanary0000000000000000 AZURE_CLIENT_SECRET=space-stage-canary-client-secret \
    OPENAI_API_KEY=sk-space-stage-canary AZURE_CLIENT_ID=00000000-0000-0000-0000-00000000c1d0 \
    SESSIONS_PLAYGROUND_SPACE_STAGE=1 \
    "${wrap[@]}" "${jail[@]}" "$@"
}

echo "space-stage: installing as uid $SPACE_UID with the image's set-up script"
as_space bash scripts/setup.sh test || exit 1
[ $# -gt 0 ] || set -- tests/space tests/emulator tests/integration tests/reliability/test_sandbox_escapes.py tests/reliability/test_fair_shares_sandbox.py tests/e2e
echo "space-stage: running the tests as uid $SPACE_UID without user namespaces"
as_space .venv/bin/python -m pytest -p no:cacheprovider "$@"
