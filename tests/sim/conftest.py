"""Shared helpers for simulation tests: small converged clusters built the same way everywhere."""

from __future__ import annotations

from typing import Any

from gossip_agent.core.effects import EventKind
from gossip_agent.sim import LinkProfile, Simulation, make_config


def converged_cluster(n: int, *, seed: int = 1, seeds: int = 3, spread: float = 2.0,
                      membership: dict[str, Any] | None = None, gossip: dict[str, Any] | None = None,
                      link: LinkProfile | None = None, **kwargs: Any) -> Simulation:
    """`n` nodes started within `spread` seconds, joined through `seeds` seeds, run until all see all."""
    sim = Simulation(n, seed=seed, config=make_config("lan", membership=membership, gossip=gossip),
                     link=link, **kwargs)
    sim.start_all(seeds=seeds, spread=spread)
    joined = sim.run_until_condition(sim.converged, timeout=120.0, check_every=0.25)
    assert joined is not None, f"{n} nodes did not converge within 120 virtual seconds"
    return sim


def saw_all(sim: Simulation, observers: list[int], subjects: list[int], kind: EventKind) -> bool:
    """Every observer had a `kind` event about every subject (at any time)."""
    return all(sim.seen.get((kind, s), {}).get(o) is not None for o in observers for s in subjects)
