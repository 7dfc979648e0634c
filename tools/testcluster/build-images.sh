#!/bin/bash
# build-images.sh: build our two images from Dockerfile.agent and Dockerfile.operator AS THEY ARE, with buildah
# (no Docker engine), into podman/buildah storage:
#   localhost/gossip-agent:$GOSSIP_E2E_TAG      localhost/gossip-operator:$GOSSIP_E2E_TAG   (tag default: e2e)
# Then `import-image.sh` copies them into the test cluster.
#
# How it works on our machines (see /work/shared/TESTBED.md and README.md here):
#  * the base image `python:3.11.14-slim-bookworm` cannot be pulled: images.sh builds a Debian stand-in with
#    that exact reference, and we build with --pull=never so the short name resolves to it locally;
#  * runc, the cgroupfs manager, the host network namespace and nofile=1024 (containers.conf written by
#    images.sh);
#  * `pip wheel` inside the build needs this host's package-index configuration: every pip config file that
#    exists here, and every local path those files name (wheel dirs, file:// indexes, CA bundle, constraints),
#    is bind-mounted read-only into the build's RUN steps at the same path (`buildah bud -v`);
#  * the Dockerfiles' BuildKit `RUN --mount=type=bind,from=build,...` is supported by buildah >= 1.24 (bookworm
#    ships 1.28), so the files are used unchanged.
# No layer cache (--layers=false): buildah 1.28 with --layers mounted a stale /wheels into the second stage when
# the first stage came from the cache (the agent image then lacked its own wheel: "gossip-agent: executable file
# not found"). A full build takes about a minute per image with the local package index.
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")"); ROOT=$(cd "$HERE/../.." && pwd)
TAG=${GOSSIP_E2E_TAG:-e2e}
T0=$(date +%s); say() { echo "[images $(date +%T) +$(( $(date +%s)-T0 ))s] $*"; }
CONF=$HOME/.cache/kube-testbed/containers.conf
[ -f "$CONF" ] || { echo "$CONF missing: run images.sh first (it builds the base images)" >&2; exit 1; }
export CONTAINERS_CONF=${CONTAINERS_CONF:-$CONF}
podman image exists docker.io/library/python:3.11.14-slim-bookworm \
  || { echo "base image docker.io/library/python:3.11.14-slim-bookworm missing: run images.sh" >&2; exit 1; }

# pip configuration of this host -> read-only bind mounts at the same paths (user configs go to root's home,
# the build runs as root)
mounts=()
add_mount() { local src=$1 dst=${2:-$1}; [ -e "$src" ] && mounts+=(-v "$src:$dst:ro"); return 0; }
for f in /etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
  [ -f "$f" ] || continue
  case $f in "$HOME"/*) add_mount "$f" "/root${f#"$HOME"}" ;; *) add_mount "$f" ;; esac
  # every absolute path (or file:// URL) the file names, e.g. cert, constraint, find-links, extra-index-url
  # (a file:// index is mounted from its parent: a PEP 503 tree's links usually point beside `simple/`)
  for p in $( { grep -oE '(^|[[:space:]=])/[^[:space:]]+' "$f" | sed 's#^[[:space:]=]*##'
               grep -oE 'file://[^[:space:]]+' "$f" | sed 's#^file://##; s#/*$##' | xargs -r -n1 dirname; } | sort -u); do
    case " ${mounts[*]} " in *" $p:"*) ;; *) add_mount "$p" ;; esac
  done
done

build() { # build NAME: Dockerfile.NAME -> localhost/gossip-NAME:TAG
  local name=$1 s; s=$(date +%s)
  local log=${TMPDIR:-/tmp}/gossip-build-$name.log
  nice -n 19 buildah bud --pull=never --layers=false "${mounts[@]}" \
    --build-arg REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -f "$ROOT/Dockerfile.$name" -t "localhost/gossip-$name:$TAG" "$ROOT" > "$log" 2>&1 \
    || { tail -40 "$log" >&2; echo "buildah bud of Dockerfile.$name failed (full log: $log)" >&2; return 1; }
  # the image must hold its entry point (a wrong /wheels mount once produced an image without it)
  podman run --rm --net=none --entrypoint sh "localhost/gossip-$name:$TAG" -c "command -v gossip-$name" >/dev/null \
    || { echo "localhost/gossip-$name:$TAG has no gossip-$name executable" >&2; return 1; }
  say "built localhost/gossip-$name:$TAG in $(( $(date +%s)-s ))s ($(podman image inspect --format '{{.Id}}' "localhost/gossip-$name:$TAG" | cut -c1-12))"
}
build agent
build operator
