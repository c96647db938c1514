#!/usr/bin/env bash
# Container smoke test, for machines with a Docker engine (not part of CI): builds the image, starts it as a Space
# runs it (uid 1000, 0.0.0.0:7860, SPACE_ID and a secret in the environment), loads the page and runs one cell in
# the sandbox through it, then removes the container. Needs the test tools: run `bash scripts/setup.sh test` first.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-sessions-playground:smoke}
docker build -t "$image" .
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cid=$(docker run -d -p "127.0.0.1:$port:7860" -e SPACE_ID=smoke/sessions-playground \
  -e HF_TOKEN=hf_SmokeCanary000000000000000000 "$image")
trap 'docker logs "$cid" > docker-smoke.log 2>&1; docker rm -f "$cid" >/dev/null' EXIT
echo "docker-smoke: container ${cid:0:12} on http://127.0.0.1:$port/ (its log goes to docker-smoke.log)"
.venv/bin/python scripts/smoke_page.py "http://127.0.0.1:$port/"
if docker logs "$cid" 2>&1 | grep -q hf_SmokeCanary; then
  echo "docker-smoke: the secret appeared in the container's log" >&2
  exit 1
fi
echo "docker-smoke: passed"
