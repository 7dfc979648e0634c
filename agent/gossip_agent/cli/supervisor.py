"""`gossipctl up` keeps its agents running the way a StatefulSet keeps its pods.

Agent i ("<cluster>-i") has a fixed port, config and data directory. An agent that exits without leaving
(kill -9, a crash: any exit but 0) is restarted with the same data directory after a bounded backoff
(`RestartBackoff`), and comes back as a new incarnation of the same member. An agent that left (the agent
exits 0 only after a graceful leave: SIGTERM, SIGINT or POST /v1/leave) stays gone until `scale` asks for it
again. `scale N` runs agents 0..N-1: it starts the missing or departed ones and makes those from N up leave
(highest ordinals go, as a StatefulSet scales down).

`tick(now)` does the work and returns one line per event for the live view; `snapshot()` is what `ps` shows
and `agents.json` holds (PIDs included, for scripts and tests).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from gossip_agent.cli.cluster import (
    STOP_GRACE,
    AgentProcess,
    LocalCluster,
    Manifest,
    RestartBackoff,
    agent_configs,
    describe_exit,
    port_is_free,
)

STATE_FILE = "agents.json"
# Ports run base..base+N-1; this bounds what `scale` accepts (and the processes one command can start).
MAX_REPLICAS = 1000


class SlotState(Enum):
    RUNNING = "running"
    RESTARTING = "restarting"  # exited without leaving; restarts at `restart_at`
    LEFT = "left"  # left gracefully; back only when `scale` asks
    STOPPING = "stopping"  # asked to leave by `scale` (or killed after STOP_GRACE)
    REMOVED = "removed"  # scaled away


@dataclass
class Slot:
    ordinal: int
    name: str
    config: dict[str, Any]
    backoff: RestartBackoff
    state: SlotState = SlotState.RUNNING
    agent: AgentProcess | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    stop_deadline: float = 0.0
    restarts: int = 0
    last_exit: str = ""
    log_tail: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, cluster: LocalCluster, manifest: Manifest, *, base_port: int, data_root: Path,
                 extra: Mapping[str, Any], backoff: Callable[[], RestartBackoff] = RestartBackoff,
                 ctl: str = "gossipctl") -> None:
        self.cluster = cluster
        self.manifest = manifest
        self.base_port = base_port
        self.data_root = data_root
        self.extra = dict(extra)
        self.new_backoff = backoff
        self.ctl = ctl  # how the user runs gossipctl, for hints
        self.slots: list[Slot] = []
        self.replicas = 0

    # -- queries -------------------------------------------------------------------------------------------

    def running(self) -> list[AgentProcess]:
        """The agents that should be up now (state RUNNING), by ordinal."""
        return [s.agent for s in self.slots if s.state is SlotState.RUNNING and s.agent is not None]

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.name == name), None)

    def snapshot(self) -> list[dict[str, Any]]:
        out = []
        for s in self.slots:
            if s.state is SlotState.REMOVED:
                continue
            live = s.agent is not None and s.agent.running()
            out.append({"name": s.name, "ordinal": s.ordinal, "port": self.base_port + s.ordinal,
                        "state": s.state.value, "pid": s.agent.pid if live and s.agent else None,
                        "restarts": s.restarts, "lastExit": s.last_exit or None})
        return out

    def write_state(self, directory: Path) -> None:
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({"cluster": self.manifest.name, "pid": os.getpid(), "replicas": self.replicas,
                                   "agents": self.snapshot()}, indent=2) + "\n")
        tmp.replace(directory / STATE_FILE)

    # -- commands ------------------------------------------------------------------------------------------

    def configs_for(self, replicas: int) -> list[dict[str, Any]]:
        """Configs of agents 0..replicas-1 (ConfigError if invalid); existing agents keep theirs."""
        fresh = agent_configs(self.manifest, base_port=self.base_port, replicas=replicas,
                              data_root=self.data_root, extra=self.extra)
        return [self.slots[i].config if i < len(self.slots) else cfg for i, cfg in enumerate(fresh)]

    def scale(self, replicas: int, now: float) -> list[str]:
        """Run agents 0..replicas-1 and no others; the event lines. ValueError if it cannot."""
        if not 0 <= replicas <= MAX_REPLICAS or self.base_port + replicas - 1 > 65535:
            raise ValueError(f"replicas must be 0..{min(MAX_REPLICAS, 65536 - self.base_port)}")
        configs = self.configs_for(max(replicas, 1))[:replicas]
        to_start = [i for i in range(replicas)
                    if i >= len(self.slots) or self.slots[i].state in (SlotState.LEFT, SlotState.REMOVED)]
        busy = [self.base_port + i for i in to_start if not port_is_free(self.base_port + i)]
        if busy:
            raise ValueError(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use")
        events = []
        self.replicas = replicas
        for i in to_start:
            if i == len(self.slots):
                cfg = configs[i]
                self.slots.append(Slot(i, str(cfg["name"]), cfg, self.new_backoff()))
                events.append(f"{cfg['name']} added: scaled to {replicas}")
            slot = self.slots[i]
            if slot.state in (SlotState.LEFT, SlotState.REMOVED):
                events.append(f"{slot.name} back: scaled to {replicas}")
            self._start(slot, now)
        for slot in self.slots[replicas:]:
            if slot.state is SlotState.RUNNING and slot.agent is not None:
                slot.agent.signal(signal.SIGTERM)
                slot.state, slot.stop_deadline = SlotState.STOPPING, now + STOP_GRACE
                events.append(f"{slot.name} leaving: scaled to {replicas}")
            elif slot.state in (SlotState.RESTARTING, SlotState.LEFT):
                slot.state = SlotState.REMOVED
                events.append(f"{slot.name} removed: scaled to {replicas}")
        return events

    def kill(self, name: str) -> str:
        """SIGKILL agent `name` (as a crash would); `tick` then restarts it. ValueError if not running."""
        slot = self.slot(name)
        if slot is None or slot.state is SlotState.REMOVED:
            known = ", ".join(s.name for s in self.slots if s.state is not SlotState.REMOVED)
            raise ValueError(f"no agent {name!r} in this cluster (agents: {known or 'none'})")
        if slot.agent is None or not slot.agent.running():
            raise ValueError(f"{name} is not running ({slot.state.value})")
        pid = slot.agent.pid
        slot.agent.signal(signal.SIGKILL)
        return f"{name} (pid {pid}) killed with SIGKILL"

    # -- the loop ------------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[str]:
        """Notice exits, restart what is due, finish scale-downs; one line per event."""
        events: list[str] = []
        for slot in self.slots:
            agent = slot.agent
            if slot.state is SlotState.RUNNING and agent is not None and not agent.running():
                code = agent.proc.returncode
                slot.last_exit = describe_exit(code)
                if code == 0:
                    slot.state = SlotState.LEFT
                    events.append(f"{slot.name} left; not restarting (`{self.ctl} scale {self.replicas}` "
                                  "brings it back)")
                else:
                    wait = slot.backoff.delay(now - slot.started_at, now)
                    slot.state, slot.restart_at = SlotState.RESTARTING, now + wait
                    events.append(f"{slot.name} exited ({slot.last_exit}), restarting in {wait:.0f}s")
                    if code > 0:
                        events.append("  last log lines:\n" + _indent(agent.log_tail(8)))
            elif slot.state is SlotState.RESTARTING and now >= slot.restart_at:
                if not port_is_free(self.base_port + slot.ordinal):
                    wait = slot.backoff.delay(0.0, now)
                    slot.restart_at = now + wait
                    events.append(f"{slot.name}: port {self.base_port + slot.ordinal} is in use; "
                                  f"retrying in {wait:.0f}s")
                    continue
                slot.backoff.restarted(now)
                slot.restarts += 1
                self._start(slot, now)
                assert slot.agent is not None
                events.append(f"{slot.name} restarted (pid {slot.agent.pid}, restart {slot.restarts})")
            elif slot.state is SlotState.STOPPING and agent is not None:
                if not agent.running():
                    slot.last_exit = describe_exit(agent.proc.returncode)
                    if slot.ordinal < self.replicas:  # scaled back up while it was leaving
                        self._start(slot, now)
                        events.append(f"{slot.name} left, and starts again: scaled to {self.replicas}")
                    else:
                        slot.state = SlotState.REMOVED
                        events.append(f"{slot.name} left ({slot.last_exit}); removed")
                elif now >= slot.stop_deadline:
                    agent.signal(signal.SIGKILL)
                    slot.stop_deadline = now + STOP_GRACE
                    events.append(f"{slot.name} did not leave within {STOP_GRACE:.0f}s; killed")
        return events

    def _start(self, slot: Slot, now: float) -> None:
        if slot.agent is not None and slot.agent in self.cluster.agents and not slot.agent.running():
            self.cluster.agents.remove(slot.agent)  # keep the cluster's list to live and current processes
        slot.agent = self.cluster.start(slot.config)
        slot.state, slot.started_at = SlotState.RUNNING, now


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
