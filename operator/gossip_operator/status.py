"""Compute a GossipCluster's status from what was observed: pods, the StatefulSet, and agents' own reports.

Pure: `compute(observation, previous, now)` returns the new status, the merge patch to write (None when
nothing changed, so an idle cluster costs no writes), and the Kubernetes Events the change deserves.

Members: each queried agent reports its member table; tables are merged by SWIM precedence (the higher
incarnation wins; at equal incarnation dead/left beat suspect beat alive), so one agent that already saw a
failure is enough to report it. Converged: every reporting agent says it has converged (when it reports
convergence at all), their views of who is alive agree, and they all report one state root. Agents without
the replicated state (no `state`/`convergence` in their status) are judged by their member tables alone.

Conditions follow the Kubernetes conventions: type, status, CamelCase reason, message, and a
lastTransitionTime that moves only when status flips (a new reason or message alone keeps it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

CONDITION_TYPES = ("Ready", "Progressing", "Converged", "Degraded")
MEMBER_STATES = ("alive", "suspect", "dead", "left")
_PRECEDENCE = {"alive": 0, "suspect": 1, "dead": 2, "left": 2}
MAX_UNHEALTHY_NAMES = 20
SHORT_ROOT = 12


@dataclass(frozen=True, slots=True)
class PodObservation:
    name: str
    ip: str | None
    ready: bool
    port: int | None = None  # the agent port to query (annotation or container port); None: the spec's
    terminating: bool = False


@dataclass(frozen=True, slots=True)
class StatefulSetObservation:
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    current_revision: str | None = None
    update_revision: str | None = None
    generation: int = 0
    observed_generation: int = 0
    spec_replicas: int = 0


@dataclass(frozen=True, slots=True)
class MemberView:
    name: str
    state: str
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class AgentReport:
    """One agent's answer (GET /v1/status and /v1/members), or the error that replaced it."""

    pod: str
    status: Mapping[str, Any] | None = None
    members: tuple[MemberView, ...] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None


@dataclass(frozen=True, slots=True)
class Observation:
    generation: int
    desired_replicas: int
    selector: str
    paused: bool = False
    spec_error: str | None = None
    statefulset: StatefulSetObservation | None = None
    pods: tuple[PodObservation, ...] = ()
    reports: tuple[AgentReport, ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    status: dict[str, Any]
    patch: dict[str, Any] | None
    events: tuple[Event, ...] = field(default=())


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_members(reports: Sequence[AgentReport]) -> dict[str, MemberView]:
    merged: dict[str, MemberView] = {}
    for report in reports:
        for member in report.members or ():
            if member.state not in _PRECEDENCE:
                continue
            known = merged.get(member.name)
            if known is None or (member.incarnation, _PRECEDENCE[member.state]) > (
                    known.incarnation, _PRECEDENCE[known.state]):
                merged[member.name] = member
    return merged


def _member_counts(reports: Sequence[AgentReport], merged: Mapping[str, MemberView]) -> dict[str, int]:
    if merged:
        return {state: sum(1 for m in merged.values() if m.state == state) for state in MEMBER_STATES}
    for report in reports:  # agents that report counts but no member list
        counts = (report.status or {}).get("members")
        if isinstance(counts, Mapping):
            return {state: int(counts.get(state, 0) or 0) for state in MEMBER_STATES}
    return {state: 0 for state in MEMBER_STATES}


@dataclass(frozen=True, slots=True)
class _Agreement:
    converged: bool
    root: str | None
    why_not: str
    convergence_seconds: float | None
    # Seconds since the most recent full agreement any agent saw (0 while converged); None if never/unknown.
    since_agreement: float | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _agreement(reports: Sequence[AgentReport]) -> _Agreement:
    """Do the answering agents agree? Agents with the replicated state report `state.root` and a `convergence`
    block (their own view: every member they know publishes their root); older agents report neither and only
    their member tables can be compared. Converged: every agent says so, their alive views agree, and all of
    them share one state root (an agent without a root beside agents with one does not)."""
    ok = [r for r in reports if r.ok]
    if not ok:
        return _Agreement(False, None, "no agent answered", None)
    roots: dict[str, str] = {}  # pod -> root
    seconds: list[float] = []
    since: list[float] = []
    not_converged: list[str] = []
    for report in ok:
        status = report.status or {}
        state = status.get("state")
        if isinstance(state, Mapping) and isinstance(state.get("root"), str) and state["root"]:
            roots[report.pod] = state["root"]
        convergence = status.get("convergence")
        if isinstance(convergence, Mapping):
            distinct = convergence.get("distinctRoots")
            if convergence.get("converged") is not True or (
                    isinstance(distinct, int) and not isinstance(distinct, bool) and distinct > 1):
                fraction = _number(convergence.get("fraction"))
                not_converged.append(report.pod if fraction is None else f"{report.pod} ({fraction:.0%} agree)")
            if (last := _number(convergence.get("lastConvergenceSeconds"))) is not None:
                seconds.append(last)
            if (ago := _number(convergence.get("secondsSinceAgreement"))) is not None:
                since.append(ago)
    alive_views = {
        frozenset(m.name for m in r.members if m.state == "alive") for r in ok if r.members is not None
    }
    distinct_roots = set(roots.values())
    root = next(iter(distinct_roots)) if len(distinct_roots) == 1 else None
    rootless = sorted(r.pod for r in ok if r.pod not in roots) if roots else []
    why = ""
    if len(distinct_roots) > 1:
        why = f"{len(distinct_roots)} distinct state roots among {len(ok)} agents"
    elif rootless:
        why = f"{', '.join(rootless)} report no state root"
    elif len(alive_views) > 1:
        why = f"{len(ok)} agents disagree on which members are alive"
    elif not_converged:
        why = f"{', '.join(sorted(not_converged))} report not converged"
    return _Agreement(not why, root, why, max(seconds) if seconds else None, min(since) if since else None)


def _condition(ctype: str, ok: bool | None, reason: str, message: str) -> dict[str, Any]:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def _conditions(obs: Observation, counts: Mapping[str, int], agreement: _Agreement,
                ready_replicas: int) -> list[dict[str, Any]]:
    desired = obs.desired_replicas
    ok_reports = [r for r in obs.reports if r.ok]
    failed_reports = [r for r in obs.reports if not r.ok]
    sts = obs.statefulset

    if obs.spec_error:
        ready = _condition("Ready", False, "InvalidSpec", obs.spec_error)
    elif desired == 0:
        ready = _condition("Ready", True, "ScaledToZero", "no agents requested")
    elif ready_replicas < desired:
        ready = _condition("Ready", False, "ReplicasNotReady", f"{ready_replicas}/{desired} agents ready")
    elif not ok_reports:
        ready = _condition("Ready", False, "AgentsUnreachable", "no agent answered its status query")
    elif counts["alive"] < desired:
        ready = _condition("Ready", False, "MembersNotAlive",
                           f"agents see {counts['alive']} of {desired} members alive")
    else:
        ready = _condition("Ready", True, "AllMembersReady",
                           f"{ready_replicas}/{desired} agents ready, {counts['alive']} members alive")

    if obs.spec_error:
        progressing = _condition("Progressing", False, "InvalidSpec", "the spec must be fixed first")
    elif obs.paused:
        progressing = _condition("Progressing", False, "Paused", "spec.paused is true; children are not changed")
    elif sts is None:
        progressing = _condition("Progressing", True, "Creating", "waiting for the StatefulSet")
    elif sts.observed_generation < sts.generation or sts.updated_replicas < sts.replicas or (
            sts.update_revision and sts.current_revision and sts.update_revision != sts.current_revision):
        progressing = _condition("Progressing", True, "RollingUpdate",
                                 f"{sts.updated_replicas}/{sts.replicas} agents updated")
    elif sts.replicas != desired:
        progressing = _condition("Progressing", True, "Scaling", f"scaling from {sts.replicas} to {desired} agents")
    elif ready_replicas < desired:
        progressing = _condition("Progressing", True, "WaitingForReplicas", f"{ready_replicas}/{desired} agents ready")
    else:
        progressing = _condition("Progressing", False, "RolloutComplete", f"{desired} agents up to date")

    if desired == 0:
        converged = _condition("Converged", True, "ScaledToZero", "no agents requested")
    elif not ok_reports:
        converged = _condition("Converged", None, "NoReports", "no agent answered its status query")
    elif agreement.converged:
        root = f" on state root {agreement.root[:SHORT_ROOT]}" if agreement.root else ""
        converged = _condition("Converged", True, "Converged", f"{len(ok_reports)} agents agree{root}")
    else:
        converged = _condition("Converged", False, "NotConverged", agreement.why_not)

    suspect, dead = counts["suspect"], counts["dead"]
    unreachable = [r.pod for r in failed_reports]
    if dead:
        degraded = _condition("Degraded", True, "MembersFailed", f"{dead} dead and {suspect} suspect members")
    elif suspect:
        degraded = _condition("Degraded", True, "MembersSuspect", f"{suspect} suspect members")
    elif unreachable and ready_replicas > 0:
        degraded = _condition("Degraded", True, "AgentsUnreachable",
                              f"could not query {', '.join(sorted(unreachable))}")
    else:
        degraded = _condition("Degraded", False, "Healthy", "no failed or suspect members")
    return [ready, progressing, converged, degraded]


def _with_transition_times(new: list[dict[str, Any]], previous: Sequence[Mapping[str, Any]], now: str,
                           generation: int) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    out = []
    for condition in new:
        old = before.get(condition["type"])
        since = old.get("lastTransitionTime") if old and old.get("status") == condition["status"] else None
        out.append({**condition, "lastTransitionTime": since or now, "observedGeneration": generation})
    return out


def _phase(obs: Observation, conditions: Sequence[Mapping[str, Any]]) -> str:
    by_type = {c["type"]: c for c in conditions}
    if obs.spec_error:
        return "Invalid"
    if obs.paused:
        return "Paused"
    if by_type["Degraded"]["status"] == "True":
        return "Degraded"
    if by_type["Ready"]["status"] == "True":
        return "Running"
    return "Pending"


def _events(obs: Observation, previous: Mapping[str, Any], status: Mapping[str, Any],
            merged: Mapping[str, MemberView]) -> list[Event]:
    events = []
    before = set(previous.get("unhealthyMembers") or [])
    after = set(status.get("unhealthyMembers") or [])
    for name in sorted(after - before):
        state = merged[name].state if name in merged else "unhealthy"
        events.append(Event("Warning", "MemberFailed", f"member {name} is {state}"))
    for name in sorted(before - after):
        if name in merged and merged[name].state == "alive":
            events.append(Event("Normal", "MemberRecovered", f"member {name} is alive again"))
    was, now = previous.get("converged"), status.get("converged")
    if was is True and now is False:
        events.append(Event("Warning", "ConvergenceLost", _message(status, "Converged")))
    elif was is False and now is True:
        events.append(Event("Normal", "ConvergenceRegained", _message(status, "Converged")))
    old_ready = {c.get("type"): c for c in previous.get("conditions") or []}.get("Ready") or {}
    if obs.spec_error and (old_ready.get("reason") != "InvalidSpec" or old_ready.get("message") != obs.spec_error):
        events.append(Event("Warning", "InvalidSpec", obs.spec_error))
    return events


def _message(status: Mapping[str, Any], ctype: str) -> str:
    for condition in status.get("conditions", []):
        if condition["type"] == ctype:
            return str(condition["message"])
    return ""


def compute(obs: Observation, previous: Mapping[str, Any] | None, now: datetime) -> StatusUpdate:
    previous = dict(previous or {})
    stamp = timestamp(now)
    merged = merge_members(obs.reports)
    counts = _member_counts(obs.reports, merged)
    agreement = _agreement(obs.reports)
    live_pods = [p for p in obs.pods if not p.terminating]
    sts = obs.statefulset
    replicas = sts.replicas if sts is not None else len(live_pods)
    ready_replicas = sts.ready_replicas if sts is not None else sum(1 for p in live_pods if p.ready)
    unhealthy = sorted(n for n, m in merged.items() if m.state in ("suspect", "dead"))[:MAX_UNHEALTHY_NAMES]
    any_report = any(r.ok for r in obs.reports)

    conditions = _with_transition_times(_conditions(obs, counts, agreement, ready_replicas),
                                        previous.get("conditions") or [], stamp, obs.generation)
    status: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "phase": _phase(obs, conditions),
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "selector": obs.selector,
        "members": counts,
        "unhealthyMembers": unhealthy,
        "reportingAgents": sum(1 for r in obs.reports if r.ok),
        "conditions": conditions,
    }
    if any_report or obs.desired_replicas == 0:
        status["converged"] = agreement.converged or obs.desired_replicas == 0
    elif "converged" in previous:
        status["converged"] = previous["converged"]  # unknown now: keep the last answer, Converged says why
    if agreement.root:
        status["stateRoot"] = agreement.root
        status["stateRootShort"] = agreement.root[:SHORT_ROOT]
    last_converged = previous.get("lastConvergedTime")
    if status.get("converged") and previous.get("converged") is not True:
        last_converged = stamp
    elif not last_converged and agreement.since_agreement is not None:
        # Not converged now and never seen converged by this operator: when the agents last agreed (set
        # once, so later passes do not move it).
        last_converged = timestamp(now - timedelta(seconds=agreement.since_agreement))
    if last_converged:
        status["lastConvergedTime"] = last_converged
    seconds = agreement.convergence_seconds if agreement.convergence_seconds is not None else previous.get(
        "convergenceSeconds")
    if seconds is not None:
        status["convergenceSeconds"] = round(float(seconds), 3)

    events = tuple(_events(obs, previous, status, merged))
    if status == previous:
        return StatusUpdate(status=status, patch=None, events=events)
    patch = dict(status)
    for key in previous:
        if key not in status:
            patch[key] = None
    return StatusUpdate(status=status, patch={"status": patch}, events=events)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def pod_observation(body: Mapping[str, Any], *, port_annotation: str, port_name: str) -> PodObservation:
    """What the operator needs to know of one agent pod (kept in kopf's pod index)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [] if isinstance(c, Mapping))
    port: int | None = None
    annotated = (meta.get("annotations") or {}).get(port_annotation)
    if isinstance(annotated, str) and annotated.isdigit() and 0 < int(annotated) < 65536:
        port = int(annotated)
    else:
        for container in (body.get("spec") or {}).get("containers") or []:
            for p in container.get("ports") or []:
                if p.get("name") == port_name and p.get("protocol", "TCP") == "TCP":
                    port = _int(p.get("containerPort")) or None
    return PodObservation(
        name=str(meta.get("name", "")),
        ip=status.get("podIP") or None,
        ready=ready,
        port=port,
        terminating=bool(meta.get("deletionTimestamp")),
    )


def statefulset_observation(body: Mapping[str, Any]) -> StatefulSetObservation:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return StatefulSetObservation(
        replicas=_int(status.get("replicas")),
        ready_replicas=_int(status.get("readyReplicas")),
        updated_replicas=_int(status.get("updatedReplicas")),
        current_revision=status.get("currentRevision"),
        update_revision=status.get("updateRevision"),
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        spec_replicas=_int((body.get("spec") or {}).get("replicas")),
    )
