"""bench/bench_topology_real.py does not rot, and the N >= 30 comparison holds with generous margins.

The smoke run (2 groups of 3 agents, short phases, both modes) asserts no timing: every write reached every
agent, nobody was suspected, the router counted traffic inside and between groups, and the estimates were
asked for every pair. The slow-group run (30 agents in 3 zones, 20/35/50 ms apart) asserts what does not
depend on the machine's speed: zone-aware choice cuts the cross-zone bytes of a write burst by at least 3x
(the bench measures the exact figure) and its cross-zone TCP (anti-entropy) bytes to at most half the uniform
mode's, every write still reaches every agent, no false positives, and the cross-zone estimates stay within 25%
of the measured round trips; six agents killed per mode are all detected by every survivor, nobody alive is
declared dead, and the median detection time stays within a guard of uniform choice's (1.2x; see the test).
Two fast tests without namespaces check how the bench picks its victims and reads the agents' logs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.chaos.netns import AgentProc, Host, environment_problem
from tests.chaos.zones_netns import delayer_problem

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_topology_real  # noqa: E402

netns = pytest.mark.netns
# The detection guards of the 30-agent run (see its test), and the 1-minute load above which the machine's
# other work, not the protocol, decides how two runs minutes apart compare.
DETECTION_RATIO, DETECTION_RATIO_LOADED, QUIET_LOAD = 1.2, 1.5, 8.0


@pytest.fixture
def _needs_namespaces_and_delayer() -> None:
    try:
        problem = environment_problem() or delayer_problem()
    except Exception as exc:
        problem = f"network namespace check failed: {exc}"
    if problem:
        pytest.skip(problem)


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "out.json"
    assert bench_topology_real.main([*args, "--json", str(out)]) == 0
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _common_checks(result: dict[str, Any]) -> None:
    assert "error" not in result, result.get("error")
    writes = result["writes"]
    assert writes["errors"] == 0 and writes["complete"] == writes["writes"], writes
    assert result["false_positives"] == {"non_alive_views": [], "dead_log_lines": 0}
    assert result["queue_drops"] == 0
    assert result["rtt"]["summary"]["missing"] == 0


def _fake_agents(sizes: list[int], tmp_path: Path) -> tuple[Any, list[AgentProc]]:
    hosts = [Host(i, f"h{i}", f"10.0.0.{i}") for i in range(sum(sizes))]
    group_of = {h.index: g for g, size in enumerate(sizes) for h in hosts[sum(sizes[:g]):sum(sizes[:g + 1])]}
    bed = SimpleNamespace(group_of=group_of,
                          groups=lambda: [[h for h in hosts if group_of[h.index] == g] for g in range(len(sizes))])
    agents = [AgentProc(f"a{h.index}", h, SimpleNamespace(log_path=tmp_path / f"a{h.index}.log"))  # type: ignore[arg-type]
              for h in hosts]
    return bed, agents


def test_victims_are_spread_over_the_groups_and_never_a_seed(tmp_path: Path) -> None:
    bed, agents = _fake_agents([10, 10, 10], tmp_path)
    victims = bench_topology_real.pick_victims(bed, agents, 6)
    assert [bed.group_of[v.host.index] for v in victims] == [0, 1, 2, 0, 1, 2]
    assert len({v.name for v in victims}) == 6 and not {0, 10, 20} & {v.host.index for v in victims}
    assert victims == bench_topology_real.pick_victims(bed, agents, 6)  # the same hosts in every mode
    with pytest.raises(ValueError):
        bench_topology_real.pick_victims(bed, agents, 28)  # 27 non-seed members in all


def test_member_events_are_read_from_the_agents_log_with_their_stamps(tmp_path: Path) -> None:
    _, agents = _fake_agents([2], tmp_path)
    log = agents[0].proc.log_path
    log.write_bytes(b"2026-11-30 17:00:00,123 WARNING gossip_agent.io.runtime: member a1 suspect (10.0.0.1:7946, "
                    b"incarnation 0)\nnoise\n2026-11-30 17:00:05,900 WARNING gossip_agent.io.runtime: member a1 dead "
                    b"(10.0.0.1:7946, incarnation 0)\n2026-11-30 17:00:06,000 INFO x: member a1 de")
    offset, events = bench_topology_real.read_member_events(agents[0], 0)
    base = time.mktime(time.strptime("2026-11-30 17:00:00", "%Y-%m-%d %H:%M:%S"))
    assert [(round(t - base, 3), who, kind) for t, who, kind in events] == [(0.123, "a1", "suspect"),
                                                                           (5.9, "a1", "dead")]
    assert offset == log.read_bytes().rindex(b"\n") + 1  # the incomplete last line waits for the next read
    with log.open("ab") as f:
        f.write(b"ad (10.0.0.1:7946, incarnation 0)\n")
    assert bench_topology_real.read_member_events(agents[0], offset)[1] == [(base + 6.0, "a1", "dead")]


@netns
@pytest.mark.usefixtures("_needs_namespaces_and_delayer")
def test_smoke_both_modes(tmp_path: Path) -> None:
    data = _run(tmp_path, "--groups", "3,3", "--rtt-ms", "20", "--settle", "5", "--idle", "3", "--writes", "5",
                "--rate", "5", "--tail", "1")
    assert [r["mode"] for r in data["results"]] == ["aware", "uniform"]
    for result in data["results"]:
        _common_checks(result)
        pairs = result["write_bytes"]["pairs"]
        assert pairs["0-0"] > 0 and pairs["0-1"] > 0 and pairs["1-0"] > 0, pairs
        assert set(result["write_bytes"]["summary"]["by_proto"]) >= {"udp", "tcp"}
        assert result["rtt"]["summary"]["observers"] == 6
    assert set(data["comparison"]) == {"idle_cross_bytes_cut", "write_cross_bytes_cut", "t100_median_ratio",
                                       "t100_p90_ratio"}


@netns
@pytest.mark.usefixtures("_needs_namespaces_and_delayer")
@pytest.mark.slow(quiet_seconds=311)  # the kill phase (~10.5 s quiet) replaces the 5 s tail: +11 s
def test_thirty_agents_zone_aware_choice_cuts_cross_zone_bytes(tmp_path: Path) -> None:
    data = _run(tmp_path, "--groups", "10,10,10", "--rtt-ms", "20,35,50", "--settle", "40", "--idle", "10",
                "--writes", "40", "--rate", "2", "--kill", "--kills", "6", "--kill-stagger", "0.5")
    for result in data["results"]:
        _common_checks(result)
        assert result["n"] == 30
    aware = next(r for r in data["results"] if r["mode"] == "aware")
    uniform = next(r for r in data["results"] if r["mode"] == "uniform")
    # Estimates within 25% of the measured RTT, in both modes. Zone-aware probing samples far pairs a third as
    # often; its cross-zone estimates came out short (12-36% off) until a far sample weighed as much as the near
    # ones together (core/topology_state.FarSampleWeight) and acks later than the probe timeout stopped
    # counting as round trips.
    for result in (aware, uniform):
        assert result["rtt"]["summary"]["median_rel_error_cross"] <= 0.25, (result["mode"], result["rtt"]["summary"])
    # Measured 5.3-17.9x in six runs under load 1-50 (3.2-3.9x before repairs went near first): 3x leaves room
    # for a stalled run; the TCP check below is what catches repairs going far again.
    assert data["comparison"]["write_cross_bytes_cut"] >= 3.0, data["comparison"]
    # Repairs go near first (core/replica.RepairPlanner): the aware mode's anti-entropy streams (TCP) across zones
    # during the writes were above the uniform mode's (stale far roots drew repairs); now a small fraction.
    tcp = [r["write_bytes"]["summary"]["by_proto"]["tcp"]["cross"] for r in (aware, uniform)]
    assert 2 * tcp[0] <= tcp[1], tcp
    # Failure detection unchanged: six agents killed (two per zone, 0.5 s apart) in each mode; every survivor
    # sees every one dead and nobody alive is declared dead, in both modes.
    for result in (aware, uniform):
        d = result["detection"]
        assert d["undetected"] == 0 and d["false_positives"] == [], (result["mode"], d)
    # Detection time: the median over the six victims of the time until every survivor had it dead, aware
    # against uniform. The target is 1.1x; the simulator, 200 kills per mode at N = 30, gives 7.25 s both ways
    # (tests/sim/test_sim_zones.py checks N = 150 and 1,000), so any gap is noise. But a victim's time holds
    # the wait for its first probe, uniform over one probe interval (~1 s of ~7.3 s), and killed agents meet
    # each other as probers and helpers: 60 six-kill waves in the simulator gave aware/uniform 0.92-1.12 (p90
    # 1.04-1.06), and medians of six drawn from its 180 kills per mode land above 1.1x in 3% of draws, above
    # 1.2x in 0.1%. So 1.1 would fail now and then on luck, 1.2 about once in a thousand runs; it still catches
    # a real slowdown (a zone never probed from outside, confirmations lost across zones: seconds). The modes run
    # minutes apart, so on a machine that other work loads (1-minute load above QUIET_LOAD around either kill
    # phase; CI runs this test alone) only a gross slowdown is told apart.
    loads = aware["detection"]["load_1min"] + uniform["detection"]["load_1min"]
    bound = DETECTION_RATIO if max(loads, default=0.0) <= QUIET_LOAD else DETECTION_RATIO_LOADED
    assert data["comparison"]["detection_median_ratio"] <= bound, (
        bound, loads, data["comparison"], aware["detection"], uniform["detection"])
