"""Replay protection on sealed UDP packets (issue 10, item 9): a captured packet cannot be sent again."""

from __future__ import annotations

import os

import pytest

from gossip_agent.core import codec
from gossip_agent.core.messages import Alive, Packet
from gossip_agent.io.security import (
    REPLAY_WINDOW_PACKETS,
    AuthError,
    Keyring,
    Purpose,
    ReplayError,
    Security,
)

K1, K2 = os.urandom(32), os.urandom(32)
FRAME = codec.encode_packet(Packet("a", (Alive("gone", 3, ("10.0.0.9", 7946), {}),)))


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_replayed_packet_is_a_replay_drop() -> None:
    clock = Clock()
    sender, receiver = Security(Keyring([K1]), wall_clock=clock), Security(Keyring([K1]), wall_clock=clock)
    sealed = sender.seal(FRAME, Purpose.PACKET)
    assert receiver.open(sealed, Purpose.PACKET) == FRAME
    with pytest.raises(ReplayError) as err:
        receiver.open(sealed, Purpose.PACKET)
    assert err.value.reason == "replay"


def test_a_packet_older_than_the_window_is_dropped_even_by_a_restarted_receiver() -> None:
    clock = Clock()
    sender = Security(Keyring([K1]), wall_clock=clock, replay_window=60.0)
    sealed = sender.seal(FRAME, Purpose.PACKET)
    clock.t += 14 * 60  # the issue replayed an Alive 14 minutes later
    fresh_receiver = Security(Keyring([K1]), wall_clock=clock, replay_window=60.0)
    with pytest.raises(ReplayError, match="replay window"):
        fresh_receiver.open(sealed, Purpose.PACKET)


def test_reordering_within_the_window_is_fine_and_skew_within_the_window_too() -> None:
    sender_clock, receiver_clock = Clock(), Clock(1_800_000_030.0)  # 30 s of skew, window 60 s
    sender = Security(Keyring([K1]), wall_clock=sender_clock)
    receiver = Security(Keyring([K1]), wall_clock=receiver_clock)
    packets = [sender.seal(FRAME, Purpose.PACKET) for _ in range(REPLAY_WINDOW_PACKETS + 10)]
    for p in reversed(packets[10:]):  # newest first: every one within the window is accepted once
        assert receiver.open(p, Purpose.PACKET) == FRAME
    with pytest.raises(ReplayError):
        receiver.open(packets[0], Purpose.PACKET)  # fell out of the sliding window
    with pytest.raises(ReplayError):
        receiver.open(packets[-1], Purpose.PACKET)


def test_replay_window_survives_keyring_rotation() -> None:
    clock = Clock()
    sender = Security(Keyring([K1]), wall_clock=clock)
    receiver = Security(Keyring([K1, K2]), wall_clock=clock)
    sealed = sender.seal(FRAME, Purpose.PACKET)
    assert receiver.open(sealed, Purpose.PACKET) == FRAME
    receiver.keyring = Keyring([K2, K1])  # rotation: K2 primary, K1 still accepted
    with pytest.raises(ReplayError):
        receiver.open(sealed, Purpose.PACKET)
    sender.keyring = Keyring([K2, K1])
    assert receiver.open(sender.seal(FRAME, Purpose.PACKET), Purpose.PACKET) == FRAME


def test_unstamped_envelopes_do_not_authenticate_as_packets() -> None:
    receiver = Security(Keyring([K1]))
    with pytest.raises(AuthError):
        receiver.open(Keyring([K1]).seal(FRAME, Purpose.PACKET), Purpose.PACKET)  # pre-upgrade capture
    stream = Security(Keyring([K1]))
    body = stream.seal(b"stream body", Purpose.STREAM)
    assert receiver.open(body, Purpose.STREAM) == b"stream body"  # streams unchanged
