"""status.compute: members, convergence, conditions, transition times, patches and events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from gossip_operator.status import (
    AgentReport,
    MemberView,
    Observation,
    PodObservation,
    StatefulSetObservation,
    compute,
    merge_members,
    pod_observation,
    statefulset_observation,
)

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
ROOT = "a" * 64


def _members(states: dict[str, str], incarnation: int = 1) -> tuple[MemberView, ...]:
    return tuple(MemberView(n, s, incarnation) for n, s in states.items())


def _report(pod: str, states: dict[str, str], *, root: str | None = ROOT, converged: bool | None = True,
            seconds: float = 0.1) -> AgentReport:
    status: dict[str, Any] = {"name": pod, "members": {s: sum(1 for v in states.values() if v == s)
                                                       for s in ("alive", "suspect", "dead", "left")}}
    if root is not None:
        status["state"] = {"root": root}
    if converged is not None:
        status["convergence"] = {"converged": converged, "lastConvergenceSeconds": seconds}
    return AgentReport(pod=pod, status=status, members=_members(states))


ALL_ALIVE = {"demo-0": "alive", "demo-1": "alive", "demo-2": "alive"}
STS_OK = StatefulSetObservation(replicas=3, ready_replicas=3, updated_replicas=3, current_revision="r1",
                                update_revision="r1", generation=1, observed_generation=1, spec_replicas=3)


def _obs(**changes: Any) -> Observation:
    base: dict[str, Any] = dict(generation=1, desired_replicas=3, selector="sel", statefulset=STS_OK,
                                reports=tuple(_report(f"demo-{i}", ALL_ALIVE) for i in range(3)))
    base.update(changes)
    return Observation(**base)


def _cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == ctype)


def test_healthy_cluster() -> None:
    update = compute(_obs(), None, T0)
    s = update.status
    assert s["phase"] == "Running" and s["members"] == {"alive": 3, "suspect": 0, "dead": 0, "left": 0}
    assert s["converged"] is True and s["stateRoot"] == ROOT and s["stateRootShort"] == ROOT[:12]
    assert s["lastConvergedTime"] == "2026-11-24T12:00:00Z" and s["convergenceSeconds"] == 0.1
    assert [(_cond(s, t)["status"], _cond(s, t)["reason"]) for t in ("Ready", "Progressing", "Converged",
                                                                     "Degraded")] == [
        ("True", "AllMembersReady"), ("False", "RolloutComplete"), ("True", "Converged"), ("False", "Healthy")]
    assert all(c["lastTransitionTime"] == "2026-11-24T12:00:00Z" and c["observedGeneration"] == 1
               for c in s["conditions"])
    assert update.patch == {"status": s}


def test_unchanged_observation_needs_no_patch_and_keeps_times() -> None:
    first = compute(_obs(), None, T0).status
    again = compute(_obs(), first, T0 + timedelta(minutes=5))
    assert again.patch is None and again.events == ()
    assert again.status == first


def test_transition_time_moves_only_when_status_flips() -> None:
    first = compute(_obs(), None, T0).status
    later = T0 + timedelta(minutes=1)
    restarted = compute(_obs(statefulset=dataclasses.replace(STS_OK, ready_replicas=3)), first, later).status
    assert _cond(restarted, "Ready")["lastTransitionTime"] == "2026-11-24T12:00:00Z"
    reports = tuple(_report(f"demo-{i}", {**ALL_ALIVE, "demo-2": "suspect"}) for i in range(2))
    degraded = compute(_obs(reports=reports), first, later)
    d = _cond(degraded.status, "Degraded")
    assert (d["status"], d["reason"], d["lastTransitionTime"]) == ("True", "MembersSuspect", "2026-11-24T12:01:00Z")
    worse = compute(_obs(reports=tuple(_report(f"demo-{i}", {**ALL_ALIVE, "demo-2": "dead"}) for i in range(2))),
                    degraded.status, later + timedelta(minutes=1))
    w = _cond(worse.status, "Degraded")
    assert (w["reason"], w["lastTransitionTime"]) == ("MembersFailed", "2026-11-24T12:01:00Z")


def test_member_failure_and_recovery_events() -> None:
    healthy = compute(_obs(), None, T0).status
    reports = (_report("demo-0", {**ALL_ALIVE, "demo-2": "dead"}),
               AgentReport(pod="demo-2", error="ClientConnectorError"))
    failed = compute(_obs(reports=reports), healthy, T0)
    assert failed.status["unhealthyMembers"] == ["demo-2"] and failed.status["phase"] == "Degraded"
    assert [(e.type, e.reason) for e in failed.events] == [("Warning", "MemberFailed")]
    assert failed.events[0].message == "member demo-2 is dead"
    back = tuple(_report(f"demo-{i}", ALL_ALIVE, ) for i in range(3))
    recovered = compute(_obs(reports=tuple(AgentReport(r.pod, r.status, _members(ALL_ALIVE, 2)) for r in back)),
                        failed.status, T0)
    assert [(e.type, e.reason) for e in recovered.events] == [("Normal", "MemberRecovered")]


def test_convergence_lost_and_regained() -> None:
    converged = compute(_obs(), None, T0).status
    split = (_report("demo-0", ALL_ALIVE), _report("demo-1", ALL_ALIVE, root="b" * 64))
    lost = compute(_obs(reports=split), converged, T0 + timedelta(seconds=10))
    assert lost.status["converged"] is False and "stateRoot" not in lost.status
    assert lost.patch is not None and lost.patch["status"]["stateRoot"] is None  # removed by the merge patch
    assert _cond(lost.status, "Converged")["message"] == "2 distinct state roots among 2 agents"
    assert [(e.type, e.reason) for e in lost.events] == [("Warning", "ConvergenceLost")]
    regained = compute(_obs(), lost.status, T0 + timedelta(seconds=20))
    assert [(e.type, e.reason) for e in regained.events] == [("Normal", "ConvergenceRegained")]
    assert regained.status["lastConvergedTime"] == "2026-11-24T12:00:20Z"


def test_membership_disagreement_and_agents_without_state() -> None:
    views = (_report("demo-0", ALL_ALIVE, root=None, converged=None),
             _report("demo-1", {"demo-0": "alive", "demo-1": "alive"}, root=None, converged=None))
    update = compute(_obs(reports=views), None, T0)
    assert update.status["converged"] is False and "stateRoot" not in update.status
    agree = compute(_obs(reports=views[:1]), None, T0)
    assert agree.status["converged"] is True


def test_no_reports_and_not_ready() -> None:
    sts = StatefulSetObservation(replicas=3, ready_replicas=1, updated_replicas=3, generation=1,
                                 observed_generation=1, spec_replicas=3)
    update = compute(_obs(statefulset=sts, reports=(AgentReport("demo-0", error="refused"),)), None, T0)
    s = update.status
    assert (_cond(s, "Ready")["reason"], _cond(s, "Converged")["status"]) == ("ReplicasNotReady", "Unknown")
    assert _cond(s, "Progressing")["reason"] == "WaitingForReplicas"
    assert _cond(s, "Degraded")["reason"] == "AgentsUnreachable" and "converged" not in s
    assert s["phase"] == "Degraded"


def test_progressing_reasons() -> None:
    assert _cond(compute(_obs(statefulset=None, reports=()), None, T0).status, "Progressing")["reason"] == "Creating"
    rolling = StatefulSetObservation(replicas=3, ready_replicas=3, updated_replicas=1, current_revision="a",
                                     update_revision="b", generation=2, observed_generation=2, spec_replicas=3)
    assert _cond(compute(_obs(statefulset=rolling), None, T0).status, "Progressing")["reason"] == "RollingUpdate"
    scaling = StatefulSetObservation(replicas=3, ready_replicas=3, updated_replicas=3, generation=2,
                                     observed_generation=2, spec_replicas=5)
    s = compute(_obs(statefulset=scaling, desired_replicas=5), None, T0).status
    assert _cond(s, "Progressing")["message"] == "scaling from 3 to 5 agents"
    assert _cond(s, "Ready")["reason"] == "ReplicasNotReady"


def test_invalid_spec_and_paused() -> None:
    invalid = compute(_obs(spec_error="gossip.fanout: must be 1..16, got 40"), None, T0)
    r = _cond(invalid.status, "Ready")
    assert (r["status"], r["reason"], invalid.status["phase"]) == ("False", "InvalidSpec", "Invalid")
    assert [(e.type, e.reason) for e in invalid.events] == [("Warning", "InvalidSpec")]
    assert compute(_obs(spec_error="gossip.fanout: must be 1..16, got 40"), invalid.status, T0).events == ()
    paused = compute(_obs(paused=True), None, T0).status
    assert paused["phase"] == "Paused" and _cond(paused, "Progressing")["reason"] == "Paused"


def test_scaled_to_zero() -> None:
    s = compute(_obs(desired_replicas=0, statefulset=StatefulSetObservation(), reports=()), None, T0).status
    assert _cond(s, "Ready")["reason"] == "ScaledToZero" and s["converged"] is True


def test_merge_members_by_swim_precedence() -> None:
    reports = [AgentReport("a", {}, (MemberView("x", "alive", 1), MemberView("y", "suspect", 1))),
               AgentReport("b", {}, (MemberView("x", "dead", 1), MemberView("y", "alive", 2)))]
    merged = merge_members(reports)
    assert merged["x"].state == "dead" and merged["y"].state == "alive"


def test_pod_and_statefulset_observations() -> None:
    pod = {"metadata": {"name": "demo-0", "annotations": {"gossip-operator.dev/agent-port": "9000"}},
           "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 7946}]}]},
           "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_observation(pod, port_annotation="gossip-operator.dev/agent-port", port_name="http") == \
        PodObservation("demo-0", "10.0.0.1", True, 9000, False)
    del pod["metadata"]["annotations"]
    assert pod_observation(pod, port_annotation="x", port_name="http").port == 7946
    sts = statefulset_observation({"metadata": {"generation": 2}, "spec": {"replicas": 3},
                                   "status": {"replicas": 3, "readyReplicas": 2, "observedGeneration": 2}})
    assert (sts.generation, sts.ready_replicas, sts.spec_replicas) == (2, 2, 3)


# ------------------------------------------------------------------ agents with the replicated state layer

def _agent_status(pod: str, root: str, *, converged: bool = True, fraction: float = 1.0, distinct: int = 1,
                  since: float | None = 0.0, last: float | None = 0.08, keys: int = 12) -> dict[str, Any]:
    """`GET /v1/status` of an agent with the state layer, as docs/agent-api.md shows it."""
    return {"name": pod, "incarnation": 3, "health": 0,
            "members": {"alive": 3, "suspect": 0, "dead": 0, "left": 0},
            "state": {"root": root, "keys": keys, "hlc": 1732460000123, "tombstones": 0, "replica": pod},
            "convergence": {"converged": converged, "fraction": fraction, "distinctRoots": distinct,
                            "secondsSinceAgreement": since, "lastConvergenceSeconds": last}}


def _state_reports(*statuses: dict[str, Any]) -> tuple[AgentReport, ...]:
    return tuple(AgentReport(pod=s["name"], status=s, members=_members(ALL_ALIVE)) for s in statuses)


def test_state_agents_converged_on_one_root() -> None:
    reports = _state_reports(*(_agent_status(f"demo-{i}", ROOT, last=0.05 * (i + 1)) for i in range(3)))
    s = compute(_obs(reports=reports), None, T0).status
    assert s["converged"] is True and s["stateRoot"] == ROOT and s["stateRootShort"] == ROOT[:12]
    assert s["lastConvergedTime"] == "2026-11-24T12:00:00Z"
    assert s["convergenceSeconds"] == 0.15  # the slowest agent's last convergence
    c = _cond(s, "Converged")
    assert (c["status"], c["reason"]) == ("True", "Converged")
    assert c["message"] == f"3 agents agree on state root {ROOT[:12]}"
    # Unchanged on the next pass: no write.
    assert compute(_obs(reports=reports), s, T0 + timedelta(seconds=10)).patch is None


def test_state_agent_not_converged_in_its_own_view() -> None:
    """demo-1 sees a member (perhaps one not sampled) publishing another root: not converged, though the
    sampled agents share a root."""
    reports = _state_reports(_agent_status("demo-0", ROOT),
                             _agent_status("demo-1", ROOT, converged=False, fraction=2 / 3, distinct=2, since=4.0),
                             _agent_status("demo-2", ROOT))
    s = compute(_obs(reports=reports), None, T0).status
    assert s["converged"] is False and s["stateRoot"] == ROOT
    c = _cond(s, "Converged")
    assert (c["status"], c["reason"], c["message"]) == ("False", "NotConverged",
                                                        "demo-1 (67% agree) report not converged")
    # converged=true with distinctRoots > 1 is not believed either.
    odd = _state_reports(_agent_status("demo-0", ROOT, distinct=2))
    assert compute(_obs(reports=odd), None, T0).status["converged"] is False


def test_state_agents_on_different_roots_and_missing_roots() -> None:
    split = _state_reports(_agent_status("demo-0", ROOT), _agent_status("demo-1", "b" * 64))
    s = compute(_obs(reports=split), None, T0).status
    assert s["converged"] is False and "stateRoot" not in s and "stateRootShort" not in s
    assert _cond(s, "Converged")["message"] == "2 distinct state roots among 2 agents"
    # A rolling upgrade: an agent without the state layer beside agents with it is not in agreement with them.
    old = AgentReport(pod="demo-2", status={"name": "demo-2", "members": {"alive": 3}}, members=_members(ALL_ALIVE))
    mixed = compute(_obs(reports=(*_state_reports(_agent_status("demo-0", ROOT)), old)), None, T0).status
    assert mixed["converged"] is False and _cond(mixed, "Converged")["message"] == "demo-2 report no state root"


def test_state_convergence_times() -> None:
    # Never converged as far as this operator knows: lastConvergedTime is when the agents last agreed...
    diverged = _state_reports(_agent_status("demo-0", ROOT, converged=False, since=30.0, last=None),
                              _agent_status("demo-1", ROOT, converged=False, since=12.5, last=0.4))
    s = compute(_obs(reports=diverged), None, T0).status
    assert s["converged"] is False and s["lastConvergedTime"] == "2026-11-24T11:59:47Z"
    assert s["convergenceSeconds"] == 0.4
    # ... set once: a later pass (the agents' counters have moved on) writes nothing.
    later = _state_reports(_agent_status("demo-0", ROOT, converged=False, since=40.0, last=None),
                           _agent_status("demo-1", ROOT, converged=False, since=22.5, last=0.4))
    again = compute(_obs(reports=later), s, T0 + timedelta(seconds=10))
    assert again.patch is None and again.status["lastConvergedTime"] == "2026-11-24T11:59:47Z"
    # Converging stamps the transition and reports the new convergence time.
    agreed = _state_reports(*(_agent_status(f"demo-{i}", ROOT, last=1.25) for i in range(3)))
    done = compute(_obs(reports=agreed), again.status, T0 + timedelta(seconds=20))
    assert done.status["converged"] is True and done.status["lastConvergedTime"] == "2026-11-24T12:00:20Z"
    assert done.status["convergenceSeconds"] == 1.25
    assert [(e.type, e.reason) for e in done.events] == [("Normal", "ConvergenceRegained")]
    # Agents that never agreed and never measured anything: no times at all.
    fresh = _state_reports(_agent_status("demo-0", ROOT, converged=False, since=None, last=None))
    s = compute(_obs(reports=fresh), None, T0).status
    assert "lastConvergedTime" not in s and "convergenceSeconds" not in s


def test_garbage_in_state_blocks_is_ignored() -> None:
    status = _agent_status("demo-0", ROOT)
    status["state"] = {"root": 7}
    status["convergence"] = {"converged": True, "lastConvergenceSeconds": True, "secondsSinceAgreement": -1}
    s = compute(_obs(reports=_state_reports(status)), None, T0).status
    assert s["converged"] is True and "stateRoot" not in s and "convergenceSeconds" not in s
    status["convergence"] = "yes"
    assert compute(_obs(reports=_state_reports(status)), None, T0).status["converged"] is True
