"""Keyring parsing, AEAD envelopes, rotation and the plaintext/encrypted framing policy."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from gossip_agent.core import codec
from gossip_agent.core.messages import Packet
from gossip_agent.io.security import (
    OVERHEAD,
    AuthError,
    Keyring,
    KeyringError,
    KeyringFile,
    Purpose,
    Security,
    generate_key,
    parse_keyring,
)

K1, K2, K3 = os.urandom(32), os.urandom(16), os.urandom(24)


def b64(k: bytes) -> str:
    return base64.b64encode(k).decode()


def test_parse_lines_with_comments_and_json() -> None:
    assert parse_keyring(f"# primary first\n{b64(K1)}\n\n  {b64(K2)}  \n") == [K1, K2]
    assert parse_keyring(json.dumps([b64(K2), b64(K1)])) == [K2, K1]


@pytest.mark.parametrize(("text", "message"), [
    ("", "no keys"),
    ("not-base64!!\n", "line 1: not valid base64"),
    (b64(b"short") + "\n", "AES-GCM keys are 16, 24 or 32 bytes"),
    ("[1, 2]", "list of base64 strings"),
    ("[broken", "invalid JSON"),
])
def test_parse_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        parse_keyring(text)


def test_generate_key_sizes() -> None:
    for size in (16, 24, 32):
        assert len(base64.b64decode(generate_key(size))) == size
    with pytest.raises(KeyringError):
        generate_key(20)


def test_seal_open_round_trip_and_nonce_is_random() -> None:
    ring = Keyring([K1])
    a, b = ring.seal(b"hello", Purpose.PACKET), ring.seal(b"hello", Purpose.PACKET)
    assert a != b and len(a) == len(b"hello") + OVERHEAD
    assert ring.open(a, Purpose.PACKET) == b"hello"
    assert OVERHEAD <= codec.ENVELOPE_RESERVE


def test_rotation_primary_encrypts_all_decrypt() -> None:
    old, both, new = Keyring([K1]), Keyring([K1, K2]), Keyring([K2, K1])
    # Step 1: the new key added as secondary: everyone still encrypts with K1; all interoperate.
    assert both.open(old.seal(b"x", Purpose.PACKET), Purpose.PACKET) == b"x"
    assert old.open(both.seal(b"x", Purpose.PACKET), Purpose.PACKET) == b"x"
    # Step 2: K2 primary: members that have K2 (as any key) read it; one without K2 cannot.
    assert both.open(new.seal(b"y", Purpose.PACKET), Purpose.PACKET) == b"y"
    with pytest.raises(AuthError):
        old.open(new.seal(b"y", Purpose.PACKET), Purpose.PACKET)


def test_wrong_key_tamper_truncation_and_purpose_are_rejected() -> None:
    ring = Keyring([K1])
    sealed = bytearray(ring.seal(b"payload", Purpose.PACKET))
    with pytest.raises(AuthError):
        Keyring([K3]).open(bytes(sealed), Purpose.PACKET)
    with pytest.raises(AuthError):
        ring.open(bytes(sealed), Purpose.STREAM)  # a packet replayed as a stream body
    with pytest.raises(AuthError):
        ring.open(bytes(sealed[:20]), Purpose.PACKET)
    sealed[-1] ^= 1
    with pytest.raises(AuthError):
        ring.open(bytes(sealed), Purpose.PACKET)


def test_security_policy_is_strict_both_ways() -> None:
    plain, enc = Security(None), Security(Keyring([K1]))
    frame = codec.encode_packet(Packet("a", ()))
    assert plain.open(plain.seal(frame, Purpose.PACKET), Purpose.PACKET) == frame
    with pytest.raises(AuthError):
        enc.open(frame, Purpose.PACKET)  # plaintext into an encrypted cluster
    with pytest.raises(AuthError):
        plain.open(enc.seal(frame, Purpose.PACKET), Purpose.PACKET)  # an envelope without a keyring
    assert enc.open(enc.seal(frame, Purpose.PACKET), Purpose.PACKET) == frame


def test_keyring_file_reload(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_text(b64(K1) + "\n")
    watched = KeyringFile(str(path))
    sealed = watched.keyring.seal(b"x", Purpose.STREAM)
    assert not watched.reload_if_changed()
    path.write_text(f"{b64(K2)}\n{b64(K1)}\n")
    os.utime(path, ns=(1, 1))
    assert watched.reload_if_changed()
    assert watched.keyring.size == 2
    assert watched.keyring.open(sealed, Purpose.STREAM) == b"x"
    path.write_text("garbage\n")
    os.utime(path, ns=(2, 2))
    with pytest.raises(KeyringError):
        watched.reload_if_changed()


def test_unreadable_keyring_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="security.keyringFile"):
        Keyring.from_file(tmp_path / "missing")
