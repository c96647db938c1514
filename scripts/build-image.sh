#!/usr/bin/env bash
# Builds the project's Docker image on this machine: with Docker where an engine answers, else with podman (installed
# with apt; run as root), on python:3.11-slim or, where no registry can be reached, a stand-in for it built once with
# debootstrap (see scripts/containers.sh). Prints the build time, the image's size and its layers.
#
# Usage: sudo bash scripts/build-image.sh [--local-model] [--tag NAME] [--no-cache]
#   --local-model  include the offline model (xllamacpp and the SmolLM2-135M GGUF, about 200 MB): LOCAL_MODEL=1
#   --tag NAME     the image's name (default sessions-playground, or sessions-playground:local-model)
#   --no-cache     rebuild every layer (the base image stays cached; podman keeps no layers of such a build, so the
#                  next build rebuilds them once more)
set -euo pipefail
SCRIPT_NAME=build-image
cd "$(dirname "$0")/.."
# shellcheck source=scripts/containers.sh
source scripts/containers.sh

local_model=0
tag=
cache=()
while [ $# -gt 0 ]; do
  case "$1" in
    --local-model) local_model=1 ;;
    --tag) tag=${2:?--tag needs a name}; shift ;;
    --tag=*) tag=${1#--tag=} ;;
    --no-cache) cache=(--no-cache) ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[ -n "$tag" ] || tag=sessions-playground$([ "$local_model" = 1 ] && echo :local-model || true)

engine_init
ensure_base_image

build=("$ENGINE" build -t "$tag" --build-arg "LOCAL_MODEL=$local_model" "${cache[@]}")
if [ "$ENGINE" = podman ]; then
  build+=(--layers "${ULIMITS[@]}")
  # Where TLS to the package index is intercepted, pip inside the build trusts only this machine's CA bundle: it is
  # mounted for the RUN steps (with a pip.conf naming it), and nothing of it stays in the image.
  bundle=/etc/ssl/certs/ca-certificates.crt
  if [ -f "$bundle" ]; then
    pip_conf=$(mktemp)
    trap 'rm -f "$pip_conf"' EXIT
    printf '[global]\ncert = %s\n' "$bundle" >"$pip_conf"
    chmod 644 "$pip_conf"
    build+=(-v "$bundle:$bundle:ro" -v "$pip_conf:/etc/pip.conf:ro")
  fi
fi

say "building $tag with $ENGINE (LOCAL_MODEL=$local_model${cache:+, no cache})"
started=$(date +%s%N)
log=.cache/build-image.log
mkdir -p .cache
if ! "${build[@]}" . >"$log" 2>&1; then
  tail -30 "$log" >&2
  die "the build failed (whole log: $log)"
fi
seconds=$((($(date +%s%N) - started) / 1000000000))

size=$("$ENGINE" image inspect --format '{{.Size}}' "$tag")
say "built $tag in $seconds s; image size $((size / 1000000)) MB ($size bytes); its layers:"
"$ENGINE" history --format '{{.Size}}\t{{.CreatedBy}}' "$tag" | awk -F'\t' '{
  step = $2; gsub(/^\/bin\/sh -c (#\(nop\) )?/, "", step); gsub(/[ \t]+/, " ", step)
  if (length(step) > 100) step = substr(step, 1, 97) "..."
  printf "  %10s  %s\n", $1, step }'
