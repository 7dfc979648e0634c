"""`gossipctl rtt A [B]`: the estimated round trip between two members, from network coordinates (like
`serf rtt`). With one name, between that member and the agent asked (`--addr`). Reads `GET /v1/rtt`
(io/topology_http.py); an unknown member or one without a coordinate yet is a one-line error."""

from __future__ import annotations

import argparse
import json
import urllib.parse

from gossip_agent.cli.client import ClientError, Register, Run, add_client_args, client_from_args, shown


def register_rtt(p: argparse.ArgumentParser) -> None:
    add_client_args(p)
    p.add_argument("a", help="a member name")
    p.add_argument("b", nargs="?", help="another member name (default: the agent asked)")


def run_rtt(args: argparse.Namespace) -> int:
    query = {"from": args.a, "to": args.b} if args.b else {"to": args.a}
    client = client_from_args(args)
    status, body = client.request("GET", "/v1/rtt?" + urllib.parse.urlencode(query))
    text = body[:300].decode(errors="replace").strip()
    if status != 200:
        raise ClientError(f"rtt: HTTP {status}: {text}")
    try:
        answer = json.loads(body)
        rtt_ms = float(answer["rttMs"])
        source, target, same = answer["from"], answer["to"], answer.get("sameZone")
    except (ValueError, KeyError, TypeError):
        raise ClientError("rtt: the answer is not the expected JSON") from None
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    zone = {True: "same zone", False: "cross zone", None: "zones unknown"}.get(same, "zones unknown")
    print(f"Estimated {shown(source)} <-> {shown(target)} rtt: {rtt_ms:.3f} ms ({zone})")
    return 0


COMMANDS: dict[str, tuple[str, Register, Run]] = {
    "rtt": ("estimated round trip between two members (network coordinates)", register_rtt, run_rtt),
}
