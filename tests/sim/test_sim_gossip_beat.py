"""The gossip ticker keeps its beat through the early round that follows an immediate forward.

A fresh rumor goes out at once (immediate forwarding), again a quarter interval later (the early round), and then
at the member's regular beat. When the early round set the next deadline a whole interval after itself, every
member that had just heard the rumor gossiped next 1.25 intervals after hearing it, all at about the same time:
the few members that both rounds missed waited that long (1,000 members: the last one 258 ms after the write,
with a 200 ms interval; on its beat, 97 ms). Virtual time and fixed seeds: nothing here depends on timing luck."""

from __future__ import annotations

from collections import defaultdict

from gossip_agent.core.effects import Effect
from gossip_agent.core.node import Node
from gossip_agent.sim import PayloadLog, Simulation, make_config

N = 200


def flood_cluster(n: int, seed: int) -> Simulation:
    """A converged cluster on the flood path (the broadcast tree pushes at once whatever the ticker does),
    where a rumor stays queued for a few rounds (a round goes out only while the queue holds something)."""
    config = make_config(gossip={"broadcast": "flood", "retransmit_mult": 10})
    assert config.gossip.mode == "push-pull" and config.gossip.immediate_forward
    sim = Simulation(n, seed=seed, config=config, delegate_factory=lambda i: PayloadLog())
    sim.start_joined()
    sim.run_for(5.0)
    return sim


def test_the_early_round_does_not_move_the_beat() -> None:
    sim = flood_cluster(N, seed=3)
    interval = sim.config.gossip.interval
    payload = b"on-the-beat"
    rounds: dict[int, list[float]] = defaultdict(list)  # member -> times of its gossip rounds

    def record_rounds(i: int, node: Node) -> None:
        # A gossip round is a call of the node's round (its packets no longer tell: push-pull asks for a pull
        # only while pulls bring something, so a round's packets may carry rumors alone, like a forward's).
        gossip = node._gossip

        def round_then_record(now: float, out: list[Effect]) -> None:
            if not rounds[i] or rounds[i][-1] != now:
                rounds[i].append(now)
            gossip(now, out)

        node._gossip = round_then_record  # type: ignore[method-assign]

    for i, node in enumerate(sim.nodes):
        if node is not None:
            record_rounds(i, node)
    origin = sim.live()[17]
    log = sim.delegates[origin]
    assert isinstance(log, PayloadLog)
    log.on_state_rumor(payload, sim.now)
    t0 = sim.now
    sim.broadcast(origin, payload)
    sim.run_for(3 * interval)

    logs = [d for d in sim.delegates if isinstance(d, PayloadLog)]
    assert all(payload in d.first_seen for d in logs)
    gaps = []  # from an early round (out of turn) to the member's next round
    for i, d in enumerate(logs):
        heard = d.first_seen[payload]
        after = [t for t in rounds[i] if t >= heard]
        assert len(after) >= 2, (i, heard, rounds[i])
        first, second = after[0], after[1]
        # A quarter interval after the member heard it (its forward went at once), or its beat if sooner.
        assert first - heard <= interval / 4 + 1e-9, (i, first - heard)
        if abs(first - heard - interval / 4) < 1e-9:
            gaps.append(second - first)
    assert len(gaps) > N // 2
    # Then the member's own beat, somewhere within the next interval (on average half of one); counted from
    # the early round, the gap was exactly one interval at every member.
    assert max(gaps) < interval * 0.999, max(gaps)
    assert sum(gaps) / len(gaps) < interval * 0.75
    times = sorted(d.first_seen[payload] - t0 for d in logs)
    print(f"\n{N} members: half {times[N // 2] * 1000:.0f} ms, all {times[-1] * 1000:.0f} ms; "
          f"early round to the next beat: mean {sum(gaps) / len(gaps) * 1000:.0f} ms")
