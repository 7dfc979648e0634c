"""`gossip-operator` / `python -m gossip_operator`: run the GossipCluster operator.

Settings come from the environment (see settings.py) and these flags, which win. It always runs standalone,
as one replica: see runner.py and docs/operator.md for why.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

from gossip_operator.runner import run
from gossip_operator.settings import OperatorSettings, parse_labels, parse_seconds


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gossip-operator", description="Run the GossipCluster operator.")
    p.add_argument("-n", "--namespace", action="append", dest="namespaces", metavar="NS",
                   help="serve only this namespace (repeatable); default: the whole cluster")
    p.add_argument("--status-interval", metavar="DURATION", help="how often agents are asked (default 10s)")
    p.add_argument("--resync-interval", metavar="DURATION", help="how often children are checked (default 60s)")
    p.add_argument("--agents-to-query", type=int, metavar="N", help="agents asked per status pass (default 3)")
    p.add_argument("--cluster-domain", metavar="DOMAIN",
                   help="DNS suffix appended to seed names (default: none, relative NAME-0.NAME-peers.NS.svc)")
    p.add_argument("--liveness-port", type=int, metavar="PORT", help="kopf /healthz port (default 8080, 0: off)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus /metrics port (default 9090, 0: off)")
    p.add_argument("--operator-labels", metavar="K=V[,K=V]",
                   help="labels of the operator's pod, admitted by agent NetworkPolicies "
                        "(default app.kubernetes.io/name=gossip-operator)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig when not in a cluster (default $KUBECONFIG)")
    p.add_argument("--standalone", action="store_true", default=True,
                   help="no kopf peering (always on: run exactly one replica)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> OperatorSettings:
    settings = OperatorSettings.from_env(env)
    changes: dict[str, object] = {}
    if args.namespaces:
        changes["namespaces"] = tuple(args.namespaces)
    if args.status_interval:
        changes["status_interval"] = parse_seconds(args.status_interval, "--status-interval")
    if args.resync_interval:
        changes["resync_interval"] = parse_seconds(args.resync_interval, "--resync-interval")
    if args.operator_labels:
        changes["operator_labels"] = parse_labels(args.operator_labels, "--operator-labels")
    for attr in ("agents_to_query", "liveness_port", "metrics_port", "cluster_domain", "kubeconfig"):
        if getattr(args, attr) is not None:
            changes[attr] = getattr(args, attr)
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from(args, dict(os.environ))
    except ValueError as exc:
        print(f"gossip-operator: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
