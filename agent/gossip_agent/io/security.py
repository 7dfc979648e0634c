"""Authenticated encryption of every UDP packet and stream (HTTP) body with a rotating keyring.

Envelope (what travels when a keyring is configured):

    0xE1 | nonce (12 random bytes) | AES-GCM ciphertext of the plaintext frame | tag (16 bytes)

The associated data is the frame byte plus a purpose label ("packet" or "stream"), so a captured packet
cannot be replayed as a stream body or the other way round. A plaintext frame starts with the codec's
version byte (0x01), an envelope with 0xE1 (>= 0x80): a receiver tells them apart from the first byte.
The envelope adds `OVERHEAD` = 29 bytes, which `codec.packet_overhead` reserves, so an encrypted packet
still fits `gossip.mtu`.

Keyring (memberlist's design): the first key encrypts; every key is tried to decrypt (the primary first).
Rotation without downtime: (1) add the new key as a secondary everywhere, (2) make it primary everywhere,
(3) remove the old key. There is no key id on the wire (nothing to fingerprint keys by); trial decryption
costs one AES-GCM open per key, and a keyring holds at most `MAX_KEYS`.

Keyring file (the operator's Secret holds one; `gossipctl keygen` prints a key):
- one base64 key per line, the first line being the primary; blank lines and `#` comments are ignored; or
- a JSON list of base64 strings, the first being the primary.
Keys decode to 16, 24 or 32 bytes (AES-128/192/256).

Replay protection (UDP packets): a replayed sealed Alive used to re-add a member removed minutes earlier.
A sealed packet's nonce is no longer random but (sender id: 8 random bytes per process, sequence: 4 bytes),
unique per key as GCM requires, and its plaintext starts with the sealing time (6 bytes, ms since the epoch);
the associated data names the purpose `gossip/packet+stamp`, so a packet sealed without a stamp (an old agent,
or one captured before the upgrade) does not authenticate. A receiver drops (`ReplayError`, counted as
`replay`) a packet whose stamp is outside +-`security.replayWindow` of its clock, or whose (sender id,
sequence) it has seen, with a 1024-packet sliding window per sender id (as IPsec and WireGuard do) for at
most `MAX_SENDERS` sender ids. The window survives keyring rotation (the stamp is inside the plaintext,
whatever key sealed it); clock skew between members must stay below the window. A restarted receiver has no
sequence state, and the timestamp bounds what it can be replayed to. Stream (HTTP) bodies keep random
nonces: they are requests answered once, over TCP.

Caveats: an agent without a keyring drops every envelope, an agent with one drops every plaintext packet: a
cluster is either encrypted or not (no mixed rollout mode); plaintext clusters have no replay protection
(nor any authenticity); agents of this version and older ones do not exchange UDP packets (upgrade all).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from gossip_agent.core import codec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENVELOPE_V1 = 0xE1
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES
STAMP_BYTES = 6
PACKET_OVERHEAD = OVERHEAD + STAMP_BYTES
KEY_SIZES = (16, 24, 32)
MAX_KEYS = 16
# Replay window: sequences remembered per sender id, and sender ids remembered (least recently heard go first).
REPLAY_WINDOW_PACKETS = 1024
MAX_SENDERS = 16384
_SEQ_MAX = 0xFFFF_FFFF

assert codec.ENVELOPE_RESERVE >= PACKET_OVERHEAD, "codec must reserve room for the envelope and its stamp"
assert ENVELOPE_V1 >= 0x80 > codec.VERSION


class Purpose(Enum):
    PACKET = b"gossip/packet"
    STREAM = b"gossip/stream"
    STAMPED_PACKET = b"gossip/packet+stamp"  # what `Security` seals packets as (see "Replay protection")
    STREAM_HEAD = b"gossip/stream-head"  # a peer request's header ticket (io/peer_ticket.py)


_AAD = {purpose: bytes((ENVELOPE_V1,)) + purpose.value for purpose in Purpose}
"""Associated data per purpose: the envelope byte and the purpose label (built once, not per packet)."""
_ENVELOPE = bytes((ENVELOPE_V1,))
_PACKET, _STAMPED = Purpose.PACKET, Purpose.STAMPED_PACKET  # (an enum member read from its class is a call)
_SEQ = struct.Struct(">I")
_WINDOW_MASK = (1 << REPLAY_WINDOW_PACKETS) - 1


class KeyringError(ValueError):
    """A keyring file or key is invalid; the message says which and why."""


class AuthError(ValueError):
    """A frame failed authentication (wrong key, tampered, truncated) or its framing is not the expected one."""

    reason = "auth"


class ReplayError(AuthError):
    """An authentic packet seen before, or stamped outside the replay window."""

    reason = "replay"


def generate_key(size: int = 32) -> str:
    """A new random key, base64, for a keyring file."""
    if size not in KEY_SIZES:
        raise KeyringError(f"key size must be one of {KEY_SIZES} bytes, got {size}")
    return base64.b64encode(os.urandom(size)).decode()


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: not valid base64") from None
    if len(key) not in KEY_SIZES:
        raise KeyringError(f"{where}: key is {len(key)} bytes; AES-GCM keys are 16, 24 or 32 bytes")
    return key


def parse_keyring(text: str) -> list[bytes]:
    """Keys from a keyring file's text (JSON list or one base64 key per line); the first is the primary."""
    stripped = text.strip()
    entries: list[tuple[str, str]]
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"keyring: invalid JSON list ({exc.msg})") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise KeyringError("keyring: a JSON keyring is a list of base64 strings")
        entries = [(f"keyring entry {i + 1}", item) for i, item in enumerate(items)]
    else:
        entries = [(f"keyring line {n}", line) for n, line in enumerate(text.splitlines(), 1)
                   if line.strip() and not line.lstrip().startswith("#")]
    keys = [_decode_key(item, where) for where, item in entries]
    if not keys:
        raise KeyringError("keyring: no keys")
    if len(keys) > MAX_KEYS:
        raise KeyringError(f"keyring: at most {MAX_KEYS} keys, got {len(keys)}")
    return list(dict.fromkeys(keys))


class Keyring:
    """AES-GCM keys: the first (primary) encrypts, all decrypt."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise KeyringError("keyring: no keys")
        for i, key in enumerate(keys):
            if len(key) not in KEY_SIZES:
                raise KeyringError(f"keyring key {i + 1}: {len(key)} bytes; must be 16, 24 or 32")
        # Imported here: `cryptography` costs ~7 MiB of RSS, which a plaintext agent need not pay.
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._invalid_tag = InvalidTag
        self._keys: list[AESGCM] = [AESGCM(k) for k in keys]
        self.size = len(keys)

    @classmethod
    def from_file(cls, path: str | Path) -> Keyring:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise KeyringError(f"security.keyringFile: cannot read {path}: {exc.strerror}") from None
        return cls(parse_keyring(text))

    def seal(self, plaintext: bytes, purpose: Purpose, nonce: bytes | None = None) -> bytes:
        """`nonce` (12 bytes) must never repeat under a key; None: a random one."""
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        return _ENVELOPE + nonce + self._keys[0].encrypt(nonce, plaintext, _AAD[purpose])

    def open(self, data: bytes, purpose: Purpose) -> bytes:
        if len(data) < OVERHEAD or data[0] != ENVELOPE_V1:
            raise AuthError("not an encrypted envelope")
        nonce, sealed = data[1:1 + NONCE_BYTES], data[1 + NONCE_BYTES:]
        aad = _AAD[purpose]
        for key in self._keys:
            try:
                return key.decrypt(nonce, sealed, aad)
            except self._invalid_tag:
                continue
        raise AuthError("no key of the keyring authenticates it")


class Security:
    """The agent's framing policy: seal/open with a keyring, or plaintext pass-through without one.

    Strict both ways: with a keyring, plaintext frames are rejected; without one, envelopes are rejected.
    `keyring` may be swapped at runtime (file reload) — reads of the attribute are atomic.
    """

    def __init__(self, keyring: Keyring | None, *, replay_window: float = 60.0,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.keyring = keyring
        self.replay_window = replay_window
        self.wall = wall_clock
        self._sender_id = os.urandom(8)
        self._seq = 0
        self._seen: OrderedDict[bytes, list[int]] = OrderedDict()  # sender id -> [top sequence, bitmap]

    @property
    def encrypted(self) -> bool:
        return self.keyring is not None

    def rotate(self, keyring: Keyring) -> None:
        """Use a reloaded keyring from now on (the replay window and sender id stay: rotation is not a new
        process). The one live change a running agent's security takes."""
        self.keyring = keyring

    def seal(self, frame: bytes, purpose: Purpose) -> bytes:
        keyring = self.keyring
        if keyring is None:
            return frame
        if purpose is not _PACKET:
            return keyring.seal(frame, purpose)
        seq = self._seq + 1
        if seq > _SEQ_MAX:  # a fresh sender id keeps every (id, sequence) nonce unique
            self._sender_id, seq = os.urandom(8), 1
        self._seq = seq
        stamp = int(self.wall() * 1000).to_bytes(STAMP_BYTES, "big")
        return keyring.seal(stamp + frame, _STAMPED, self._sender_id + _SEQ.pack(seq))

    def open(self, data: bytes, purpose: Purpose) -> bytes:
        keyring = self.keyring
        if keyring is None:
            if data[:1] and data[0] >= 0x80:
                raise AuthError("encrypted envelope but no keyring configured")
            return data
        if purpose is not _PACKET:
            return keyring.open(data, purpose)
        plain = keyring.open(data, _STAMPED)
        if len(plain) < STAMP_BYTES:
            raise AuthError("sealed packet without a stamp")
        age = self.wall() - int.from_bytes(plain[:STAMP_BYTES], "big") / 1000
        if abs(age) > self.replay_window:
            raise ReplayError(f"packet stamped {age:.1f}s ago, outside the {self.replay_window:g}s replay window")
        self._check_sequence(data[1:9], _SEQ.unpack_from(data, 9)[0])
        return plain[STAMP_BYTES:]

    def _check_sequence(self, sender: bytes, seq: int) -> None:
        """Sliding window per sender id: newer than the top moves it; within the window, each once."""
        seen = self._seen
        state = seen.get(sender)
        if state is None:
            seen[sender] = [seq, 1]
            if len(seen) > MAX_SENDERS:
                seen.popitem(last=False)
            return
        seen.move_to_end(sender)
        top, bits = state
        if seq > top:
            state[0] = seq
            state[1] = ((bits << (seq - top)) | 1) & _WINDOW_MASK
            return
        offset = top - seq
        if offset >= REPLAY_WINDOW_PACKETS or (bits >> offset) & 1:
            raise ReplayError("packet already seen (or older than the replay window)")
        state[1] = bits | (1 << offset)


def file_stamp(path: str) -> tuple[int, int, int]:
    """What changes when a mounted Secret's file is replaced (mtime, size, inode); zeros while it is missing. The
    keyring and the API token file reload when it differs from the stamp they loaded."""
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class KeyringFile:
    """Watches a keyring file (a mounted Secret) and reloads it when it changes: rotation without restart."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp = file_stamp(self.path)
        self.keyring = Keyring.from_file(path)

    def reload_if_changed(self) -> bool:
        """Re-read the file if its stamp changed; True if the keyring was replaced. Raises KeyringError if the
        new file is invalid (the caller keeps the old keyring and logs)."""
        stamp = file_stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self.keyring = Keyring.from_file(self.path)
        return True
