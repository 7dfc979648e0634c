"""Deterministic simulation: the real protocol cores on a virtual clock and virtual, lossy links."""

from gossip_agent.sim.cluster import PayloadLog, Simulation, Status, make_config, node_address
from gossip_agent.sim.network import LinkProfile, Network

__all__ = ["LinkProfile", "Network", "PayloadLog", "Simulation", "Status", "make_config", "node_address"]
