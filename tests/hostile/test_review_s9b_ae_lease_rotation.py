"""Review s9b (MEDIUM): one asker that makes up a new X-Gossip-Ae-Session id whenever its tenure runs out holds
an agent's push lease for good (core/ae_lease.py).

`PushLease` bars the holder whose `MAX_TENURE` ran out by its session id, and that id is whatever the asker
wrote in its header: a member (any client in a plaintext cluster, where peer requests are not authenticated)
that pushes one entry every second with session A, then with a fresh id B once A's tenure ends, and so on,
takes the freed lease at its next request. Every honest session with that agent is then answered
`X-Gossip-Ae-Push: held` at its first round, ends there (io/state_service.py `sync_with`: a held session
stops after that answer; the Merkle descent below the root never runs) and skips the agent for LEASE_HOLD.
One asker doing so with every agent under a byte budget leaves anti-entropy with no repair between honest
members at all, which the module's docstring promises cannot happen ("a peer that pushes an entry every
second, forever, must not turn everyone else's sessions away for good").

Reproduction below: an attacker pushing every second, a new id per tenure; an honest session asks every
half second for a minute and is never let push.

Proposed fix (not small: it changes what the lease and a held session do, and who is barred on a shared
host): (1) `PushLease.ask` takes the asker's address (`request.remote`) and bars the expired holder's
address, not only its session id, for at least `hold` (better: `tenure`, so one address holds the lease at
most half the time); (2) a held session goes on pulling without pushing instead of ending after its first
answer, so whoever holds the lease can only keep pushes away, never repairs. (1) alone bars every agent
behind one address (all loopback benches) for `hold` after each tenure, which the lease's owner should weigh.

Fixed: a held session goes on pulling to its end; a holder's address rests one tenure after it only when an
asker from another address was turned away meanwhile (so agents sharing 127.0.0.1 still take turns by
session; tests/agent/test_ae_push_lease.py).
"""

from __future__ import annotations

from gossip_agent.core.ae_lease import LEASE_HOLD, MAX_TENURE, PushLease

ATTACKER = "10.0.0.66"
HONEST = "10.0.0.7"


def _ask(lease: PushLease, session: str, now: float, source: str) -> bool:
    return lease.ask(session, now, pushing=True, source=source)


def test_rotating_session_ids_do_not_keep_the_push_lease_from_honest_sessions() -> None:
    lease = PushLease(hold=LEASE_HOLD, tenure=MAX_TENURE)
    generation = 0
    attacker_session = f"{generation:08x}"
    honest_pushed = 0
    now = 0.0
    # The attacker asks first each second (it is the one that pushes every second), honest sessions in between.
    for step in range(120):  # 60 s in steps of 0.5 s
        now = step * 0.5
        if step % 2 == 0 and not _ask(lease, attacker_session, now, ATTACKER):
            generation += 1  # told to stop: a new session id, at once
            attacker_session = f"{generation:08x}"
            _ask(lease, attacker_session, now, ATTACKER)
        honest = f"{0xabc000 + step:08x}"  # an honest asker's session: a fresh id each time it comes back
        if _ask(lease, honest, now + 0.01, HONEST):
            honest_pushed += 1
    assert generation >= 4  # (the attacker's tenure did run out, again and again)
    assert honest_pushed > 0, "one asker rotating session ids kept every honest session from pushing for 60 s"
