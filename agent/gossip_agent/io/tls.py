"""TLS contexts for the agent's HTTP server and its peer client (from `security.tls*File`).

- Server: serves the certificate and key. With a CA file, client certificates are requested and verified
  when presented (CERT_OPTIONAL), not required: kubelet probes and Prometheus scrapes present none.
- Client (peer push-pull, TCP probes, gossipctl): verifies the peer against the CA file (or the system
  store) and presents our own certificate as a client certificate. Peers are dialled by IP, and certificates
  a cluster issues name pods by DNS, so the hostname is not checked; the chain is.
"""

from __future__ import annotations

import ssl

from gossip_agent.core.config import ConfigError, SecurityConfig


def server_context(sec: SecurityConfig) -> ssl.SSLContext | None:
    if not sec.tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(sec.tls_cert_file, sec.tls_key_file)
        if sec.tls_ca_file:
            ctx.load_verify_locations(sec.tls_ca_file)
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"security.tlsCertFile/tlsKeyFile/tlsCaFile: cannot load: {exc}") from None
    return ctx


def client_context(sec: SecurityConfig) -> ssl.SSLContext | None:
    """None when the cluster speaks plain HTTP (no server certificate configured)."""
    if not sec.tls_cert_file and not sec.tls_ca_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=sec.tls_ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    try:
        if sec.tls_cert_file:
            ctx.load_cert_chain(sec.tls_cert_file, sec.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"security.tlsCertFile/tlsKeyFile: cannot load: {exc}") from None
    return ctx
