# Shared by scripts/build-image.sh and scripts/docker-smoke.sh (sourced, not run): the container engine, the base
# image, and the seccomp profile a Space-like run needs.
#
# A Docker engine is used where one answers (ENGINE=podman chooses podman anyway). Otherwise podman (daemonless) is
# installed with apt and used as root, with runc and cgroupfs (podman's crun default fails on cgroup v1/hybrid hosts)
# and ulimits no higher than this shell's (root without CAP_SYS_RESOURCE cannot raise them, which podman tries by
# default); the settings live in a containers.conf of this checkout's own (CONTAINERS_CONF), not in /etc.

BASE_IMAGE=docker.io/library/python:3.11-slim
# Docker's default seccomp profile (moby profiles/seccomp/default.json), as Debian packages it. It refuses user
# namespaces to an unprivileged process and allows Landlock, as a Docker or Hugging Face Space container does; podman's
# own default profile allows unshare, which a Space does not.
MOBY_SECCOMP_PACKAGE=golang-github-docker-docker-dev
MOBY_SECCOMP=/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json

say() { echo "${SCRIPT_NAME:-containers}: $*"; }
die() { echo "${SCRIPT_NAME:-containers}: $*" >&2; exit 1; }

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install $* yourself (Debian/Ubuntu package names)"
  [ "$(id -u)" -eq 0 ] || die "installing $* needs root: run this script with sudo"
  say "installing with apt: $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Sets ENGINE (docker or podman), installing podman when there is no Docker engine, and ULIMITS (podman build's).
engine_init() {
  ULIMITS=()
  # (a `docker` that is podman's emulation is podman: it needs the settings and the seccomp profile below)
  if [ "${ENGINE:-}" != podman ] && command -v docker >/dev/null 2>&1 && ! docker --version 2>&1 | grep -qi podman \
    && docker info >/dev/null 2>&1; then
    ENGINE=docker
    return
  fi
  ENGINE=podman
  [ "$(id -u)" -eq 0 ] || die "without a Docker engine this runs podman as root: run it with sudo"
  local wanted=() tool
  for tool in podman runc fuse-overlayfs slirp4netns; do command -v "$tool" >/dev/null 2>&1 || wanted+=("$tool"); done
  command -v newuidmap >/dev/null 2>&1 || wanted+=(uidmap)
  [ ${#wanted[@]} -eq 0 ] || apt_install "${wanted[@]}"
  local conf_dir
  conf_dir="$(pwd)/.cache/podman"
  mkdir -p "$conf_dir"
  local nofile nproc
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  if [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; then nofile=1048576; fi
  # (runc could not set a process limit close to this shell's on a test machine; 32768 is ample for the app)
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
  # the same for runs (containers.conf) and builds (podman build reads no default_ulimits: given as --ulimit)
  ULIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  cat >"$conf_dir/containers.conf" <<EOF
# Written by scripts/containers.sh for this checkout's podman runs.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
  export CONTAINERS_CONF="$conf_dir/containers.conf"
}

# SECCOMP: the option for a run as a Space. Docker applies its default profile by itself; podman is given it.
seccomp_init() {
  SECCOMP=()
  [ "$ENGINE" = podman ] || return 0
  [ -f "$MOBY_SECCOMP" ] || apt_install "$MOBY_SECCOMP_PACKAGE"
  [ -f "$MOBY_SECCOMP" ] || die "$MOBY_SECCOMP_PACKAGE did not provide $MOBY_SECCOMP"
  SECCOMP=(--security-opt "seccomp=$MOBY_SECCOMP")
}

# python:3.11-slim: already here, pulled, or (no registry reachable) a stand-in built once with debootstrap.
ensure_base_image() {
  if [ "$ENGINE" = docker ]; then
    return  # docker build pulls it
  fi
  if podman image exists "$BASE_IMAGE"; then
    local kind
    kind=$(podman image inspect --format '{{index .Labels "org.sessions-playground.stand-in"}}' "$BASE_IMAGE" 2>/dev/null)
    say "base image $BASE_IMAGE: ${kind:+a stand-in built with }${kind:-pulled from its registry} (cached)"
    return
  fi
  say "pulling $BASE_IMAGE"
  if timeout 600 podman pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    return
  fi
  say "no registry answers; building a stand-in for $BASE_IMAGE with debootstrap (once; it is kept)"
  build_base_stand_in || die "could not build a stand-in for $BASE_IMAGE"
}

# Debian bookworm's Python 3.11 laid out as the official image's: python3, python and pip in /usr/local/bin, no
# /usr/bin/python3 (so scripts/setup.sh picks /usr/local/bin/python3 as it does there), pip not externally managed.
build_base_stand_in() (
  set -euo pipefail
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /var/tmp/python-slim-stand-in.XXXXXX)
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  started=$(date +%s)
  debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-pip,ca-certificates,netbase,tzdata \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; die "debootstrap failed"; }
  chroot "$rootfs" dpkg-divert --quiet --local --rename --divert /usr/bin/python3.debian --add /usr/bin/python3
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3.11"
  ln -sf python3.11 "$rootfs/usr/local/bin/python3"
  ln -sf python3.11 "$rootfs/usr/local/bin/python"
  for name in pip pip3 pip3.11; do
    printf '#!/bin/sh\nexec /usr/local/bin/python3 -m pip "$@"\n' >"$rootfs/usr/local/bin/$name"
    chmod 755 "$rootfs/usr/local/bin/$name"
  done
  rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
  # Slimmed as Debian's -slim images are: no documentation, manuals or translations (also for packages installed
  # later), and apt keeps no package caches (about 80 MB after an `apt-get update` otherwise).
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{groff,info,linda,locale,man}/* "$rootfs"/usr/share/lintian/overrides/*
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" --numeric-owner -cf - . | podman import -q \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --change 'LABEL org.sessions-playground.stand-in=debootstrap' - "$BASE_IMAGE" >/dev/null
  say "stand-in $BASE_IMAGE built in $(($(date +%s) - started)) s"
)
