"""The simulator's CPU load model (`Simulation(cpu_per_packet=...)`) across a crash and restart: a restart is a new
process, with an idle CPU and an empty socket buffer. The old process's backlog (its CPU busy for seconds, the
datagrams it had not handled yet) died with it: neither delays the new process nor reaches it."""

from __future__ import annotations

from collections.abc import Callable

from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Packet, Prune
from gossip_agent.core.node import Node
from gossip_agent.sim.cluster import Simulation

CPU = 0.05  # seconds of CPU per datagram
BURST = 40  # datagrams at once: 2 s of CPU for node 1


OLD, NEW = (Prune(),), (Prune(), Prune())  # what the burst's datagrams hold, and the one sent after the restart


def handled_after_restart() -> tuple[float, list[tuple[float, tuple[Prune, ...]]]]:
    """Node 0 sends node 1 a burst of BURST datagrams (OLD) at 1.0 (node 1 busy until ~3.0); node 1 crashes at 1.1
    and restarts at 1.2; at 1.5 node 0 sends it one more (NEW). When that was sent, and when the new process
    handled which of them, up to 2.5."""
    sim = Simulation(2, seed=1, cpu_per_packet=CPU)
    sim.start_joined()
    sim.run_for(1.0)
    to = sim.addrs[1]

    def datagrams(messages: tuple[Prune, ...], count: int) -> Callable[[Node, float], list[Effect]]:
        def send(n: Node, now: float) -> list[Effect]:
            return [Send(to, Packet(n.name, messages)) for _ in range(count)]
        return send

    sim.call(0, datagrams(OLD, BURST))
    sim.run_for(0.1)
    sim.crash(1)
    sim.run_for(0.1)
    sim.restart(1, seeds=[0])
    node = sim.node(1)
    handled: list[tuple[float, tuple[Prune, ...]]] = []
    handle = node.handle_packet

    def spy(packet: Packet, src: tuple[str, int], now: float) -> list[Effect]:
        if packet.messages in (OLD, NEW):
            handled.append((now, packet.messages))  # type: ignore[arg-type]
        return handle(packet, src, now)

    node.handle_packet = spy  # type: ignore[method-assign]
    sim.run_for(0.3)
    sent = sim.now
    sim.call(0, datagrams(NEW, 1))
    sim.run_until(2.5)
    return sent, handled


def test_a_restarted_node_does_not_inherit_the_old_process_cpu_backlog() -> None:
    sent, handled = handled_after_restart()
    new = [t for t, messages in handled if messages == NEW]
    assert len(new) == 1 and new[0] - sent <= 0.01 + CPU, f"sent at {sent}, handled at {new}: behind the old backlog"


def test_datagrams_the_old_process_had_not_handled_die_with_it() -> None:
    _, handled = handled_after_restart()
    old = [t for t, messages in handled if messages == OLD]
    assert old == [], f"{len(old)} of the dead process's datagrams reached the new one"
