#!/usr/bin/env bash
# The CRD contract tests (tests/crd) against a current apiextensions API server (v1.36.4, crd-server.sh): fetch
# and build the server once (cached in $CRD_SERVER_DIR, default ~/.cache/crd-server: cold ~5 min on a quiet
# 2-core machine, 13+ on a busy one; warm: seconds), then run the tests, which start their own server instance
# (free ports, a temporary run dir) and stop it by PID. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v etcd >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq --no-install-recommends etcd-server curl openssl >/dev/null
  else
    echo "crd-tests: etcd is needed (Debian: apt-get install etcd-server)" >&2; exit 1
  fi
fi
bash tools/testcluster/crd-server.sh fetch
bash tools/testcluster/crd-server.sh build
[ -x .venv/bin/pytest ] || scripts/setup
exec .venv/bin/pytest tests/crd "$@"
