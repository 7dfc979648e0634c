"""The agent's zone from a file that may change while it runs: the operator's downward-API volume.

WHY a file. A pod's zone is its node's `topology.kubernetes.io/zone` label, known only after scheduling; the
operator copies it into a pod annotation, and a downward-API volume shows that annotation as a file that the
kubelet rewrites when it changes (docs/topology.md). An environment variable would be frozen at start.

Rules: a missing or empty file means "zone unknown"; the content is read with a size bound (`MAX_BYTES`) and
validated by `core.topology.parse_zone`; an invalid zone is reported (`error`) and treated as unknown, never
guessed. `read()` is a stat plus a read of at most `MAX_BYTES` bytes: cheap enough to run every few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossip_agent.core.topology import ZONE_MAX_LENGTH, parse_zone

#: Largest zone file read: a label of 63 characters plus whitespace fits many times over.
MAX_BYTES = 4 * ZONE_MAX_LENGTH + 1
#: Seconds between reads of the zone file (the kubelet itself updates it within about a minute).
RELOAD_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class ZoneReading:
    """What the file says: a zone (None: unknown) and, if its content was refused, why."""

    zone: str | None
    error: str | None = None


def read_zone_file(path: str) -> ZoneReading:
    """The zone in `path` now (see the module docstring); never raises."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return ZoneReading(None)
    except OSError as exc:
        return ZoneReading(None, f"cannot read zone file {path}: {exc.strerror or exc}")
    if len(raw) > MAX_BYTES:
        return ZoneReading(None, f"zone file {path} is larger than {MAX_BYTES} bytes")
    try:
        return ZoneReading(parse_zone(raw))
    except ValueError as exc:
        return ZoneReading(None, f"zone file {path}: {exc}")
