"""Network coordinates over HTTP: `GET /v1/coordinates` and `GET /v1/rtt` (like `serf rtt`; docs/agent-api.md).

Both read what the Node's topology state holds (core/topology_state.py): this agent's own coordinate and the
last coordinate each peer sent with a ping or an ack. An estimate between two other members needs neither to
have probed the other: that is what coordinates are for.

- `GET /v1/coordinates`: `{"self": name, "zone": zone|null, "coordinates": [{"name", "zone", "vec",
  "height", "error", "adjustment"}, ...]}`, this agent first, then peers by name (seconds throughout); it takes
  no query parameters (400 for any, as /v1/rtt for unknown ones).
- `GET /v1/rtt?to=b[&from=a]`: `from` defaults to this agent. 400 for a missing, repeated or malformed name, 404 for a
  name not in the member table, 409 when a member is dead or left (its coordinate is dropped) or has no
  coordinate yet; else `{"from", "to",
  "rttSeconds", "rttMs", "sameZone": true|false|null}`.

Work per request is bounded by the member table (itself bounded by membership.maxMembers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gossip_agent.core.messages import MemberState
from gossip_agent.core.node import Node
from gossip_agent.core.vivaldi import Coordinate

COORDINATES_PATH = "/v1/coordinates"
RTT_PATH = "/v1/rtt"
_MAX_NAME = 256


def _coordinate_json(name: str, zone: str | None, c: Coordinate) -> dict[str, Any]:
    return {"name": name, "zone": zone, "vec": list(c.vec), "height": c.height, "error": c.error,
            "adjustment": c.adjustment}


def _name(request: web.Request, key: str, default: str | None) -> str:
    if len(request.query.getall(key, ())) > 1:
        raise web.HTTPBadRequest(text=f"query parameter '{key}' given more than once")
    value = request.query.get(key, default)
    if value is None or not value:
        raise web.HTTPBadRequest(text=f"query parameter '{key}' (a member name) is required")
    if len(value) > _MAX_NAME:
        raise web.HTTPBadRequest(text=f"'{key}' is longer than {_MAX_NAME} characters")
    return value


def topology_routes(node_of: Callable[[], Node]) -> list[web.AbstractRouteDef]:
    """The two read-only endpoints, served from the Node `node_of()` returns."""

    async def coordinates(request: web.Request) -> web.Response:
        if request.query:
            raise web.HTTPBadRequest(text=f"unknown query parameter(s): {', '.join(sorted(set(request.query)))}; "
                                          f"{COORDINATES_PATH} takes none")
        node = node_of()
        topo = node.topology
        rows = [_coordinate_json(node.name, topo.local_zone, topo.coordinate)]
        known = topo.coordinates()
        for name in sorted(known):
            member = node.member(name)
            rows.append(_coordinate_json(name, topo.zone_of(member.meta) if member else None, known[name]))
        return web.json_response({"self": node.name, "zone": topo.local_zone, "coordinates": rows})

    async def rtt(request: web.Request) -> web.Response:
        unknown = sorted(set(request.query) - {"from", "to"})
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown query parameter(s): {', '.join(unknown)}; known: from, to")
        node = node_of()
        source, target = _name(request, "from", node.name), _name(request, "to", None)
        metas = {}
        for name in (source, target):
            member = node.member(name)
            if member is None:
                raise web.HTTPNotFound(text=f"no member named {name!r}")
            if member.state in (MemberState.DEAD, MemberState.LEFT):
                raise web.HTTPConflict(text=f"member {name!r} is {member.state.label}: no coordinate is kept for a "
                                            "member that is not alive")
            metas[name] = member.meta
        estimate = node.topology.estimate(source, target, node.name)
        if estimate is None:
            missing = [n for n in (source, target) if node.topology.coordinate_of(n, node.name) is None]
            raise web.HTTPConflict(text=f"no network coordinate known yet for {', '.join(missing)} "
                                        "(coordinates arrive with probes: wait a few probe intervals)")
        zones = [node.topology.zone_of(metas[n]) if n != node.name else node.topology.local_zone
                 for n in (source, target)]
        same = None if None in zones else zones[0] == zones[1]
        return web.json_response({"from": source, "to": target, "rttSeconds": estimate,
                                  "rttMs": round(estimate * 1000.0, 3), "sameZone": same})

    return [web.get(COORDINATES_PATH, coordinates), web.get(RTT_PATH, rtt)]
