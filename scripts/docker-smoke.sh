#!/usr/bin/env bash
# The image as a Hugging Face Space runs it, on this machine (not part of CI: minutes of building, and root): builds
# it (scripts/build-image.sh: Docker where an engine answers, else podman, installed with apt), starts it as a Space
# does (uid 1000, 0.0.0.0:7860 published on a loopback port, SPACE_ID and a canary secret in the environment, Docker's
# default seccomp profile, so no user namespaces and the Landlock tier), loads the page and runs one cell through it
# (scripts/smoke_page.py), checks that the secret stayed out of the log, prints the image's size and the timings,
# and removes the container (the images stay, so the next build is warm).
#
# Usage: sudo bash scripts/docker-smoke.sh [--local-model] [--no-cache] [--tier TIER]
#   --tier TIER   the sandbox the page must use (default Landlock; "any" accepts whatever the page chose)
# The container's log is kept in .cache/docker-smoke.log.
set -euo pipefail
SCRIPT_NAME=docker-smoke
cd "$(dirname "$0")/.."
# shellcheck source=scripts/containers.sh
source scripts/containers.sh

build=()
tier=Landlock
local_model=0
while [ $# -gt 0 ]; do
  case "$1" in
    --local-model) build+=("$1"); local_model=1 ;;
    --no-cache) build+=("$1") ;;
    --tier) tier=${2:?--tier needs a name}; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
image=${IMAGE:-sessions-playground:smoke}

say "installing the test tools (Chromium and Playwright drive the page)"
bash scripts/setup.sh test >/dev/null
bash scripts/build-image.sh --tag "$image" "${build[@]}"
engine_init
seccomp_init

port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
canary="hf_SmokeCanary$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
log=.cache/docker-smoke.log
started=$(date +%s%N)
cid=$("$ENGINE" run -d -u 1000 -p "127.0.0.1:$port:7860" -e SPACE_ID=smoke/sessions-playground \
  -e HF_TOKEN="$canary" "${SECCOMP[@]}" "$image")
cleanup() {
  "$ENGINE" logs "$cid" >"$log" 2>&1 || true
  "$ENGINE" rm -f "$cid" >/dev/null 2>&1 || true
}
trap cleanup EXIT
say "container ${cid:0:12} ($ENGINE, uid 1000, Docker's default seccomp profile) on http://127.0.0.1:$port/"

# The first HTTP 200, timed from the `run` above (up to 120 s, or until the container stops).
first_200=$(.venv/bin/python - "$port" "$started" "$ENGINE" "$cid" <<'EOF'
import subprocess, sys, time
import requests
port, started, engine, cid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
while time.time_ns() - started < 120e9:
    try:
        if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
            print(f"{(time.time_ns() - started) / 1e9:.1f}")
            break
    except requests.RequestException:
        pass
    state = subprocess.run([engine, "inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True)
    if state.stdout.strip() != "true":
        break
    time.sleep(0.1)
EOF
)
if [ -z "$first_200" ]; then
  "$ENGINE" logs "$cid" 2>&1 | tail -20 >&2
  die "the container did not serve its page (its whole log: $log)"
fi
say "first HTTP 200 $first_200 s after '$ENGINE run'"

smoke_args=("http://127.0.0.1:$port/")
[ "$tier" = any ] || smoke_args+=(--tier "$tier")
.venv/bin/python scripts/smoke_page.py "${smoke_args[@]}"
if [ "$local_model" = 1 ]; then
  # The offline model, as the picker builds it: llama.cpp in the app's process, answering on loopback.
  answer=$("$ENGINE" exec "$cid" .venv/bin/python -c "$(cat <<'EOF'
from playground.model_catalog import ModelCatalog
from playground.settings import Settings
model = ModelCatalog.from_settings(Settings()).model("local-gguf")
reply = model.generate([{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}], max_tokens=8)
print(" ".join(reply.content.split()))
EOF
)") || die "the offline model did not answer in the container"
  say "the offline model answers: '$answer'"
fi
if "$ENGINE" logs "$cid" 2>&1 | grep -q "$canary"; then
  die "the secret appeared in the container's log"
fi
size=$("$ENGINE" image inspect --format '{{.Size}}' "$image")
say "passed: image $image $((size / 1000000)) MB; first HTTP 200 $first_200 s after '$ENGINE run'"
