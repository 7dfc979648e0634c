"""HTTPS between agents: a CA-signed certificate per agent, push-pull and the API over TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gossip_agent.cli.client import AgentClient, ClientError
from gossip_agent.core.config import SecurityConfig, from_mapping
from gossip_agent.core.messages import MemberState
from gossip_agent.io.runtime import Agent


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(tmp: Path) -> tuple[str, str, str]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test-ca")).issuer_name(_name("test-ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("agent")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.crt", tmp / "tls.crt", tmp / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(paths[0]), str(paths[1]), str(paths[2])


async def test_agents_sync_over_https(tmp_path: Path) -> None:
    ca, crt, key = make_pki(tmp_path)
    # Built directly: the file key's spelling (docs say tlsCAFile) is config.py's business.
    security = SecurityConfig(tls_cert_file=crt, tls_key_file=key, tls_ca_file=ca)
    base = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0}
    a0 = Agent(replace(from_mapping({**base, "name": "t0"}), security=security))
    await a0.start()
    a1 = Agent(replace(from_mapping({**base, "name": "t1", "seeds": [f"127.0.0.1:{a0.port}"]}), security=security))
    await a1.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30.0  # generous: a busy machine slows the TLS join
        while asyncio.get_running_loop().time() < deadline:
            if all(a.node.counts()[MemberState.ALIVE] == 2 for a in (a0, a1)):
                break
            await asyncio.sleep(0.05)
        assert a1.stats.streams[("pushpull", "ok")] >= 1  # the join went over HTTPS
        assert a0.node.counts()[MemberState.ALIVE] == 2
        client = AgentClient(f"https://127.0.0.1:{a0.port}", cafile=ca)
        status = await asyncio.to_thread(client.status)
        assert status["members"]["alive"] == 2
        plain = AgentClient(f"127.0.0.1:{a0.port}", timeout=10.0)
        with pytest.raises(ClientError):  # plain HTTP to an HTTPS port is not served
            await asyncio.to_thread(plain.request, "GET", "/healthz")
    finally:
        await a0.stop()
        await a1.stop()
