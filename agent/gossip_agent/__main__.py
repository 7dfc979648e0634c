"""`python -m gossip_agent` / `gossip-agent`: run one agent (docs/agent-api.md is the contract).

Precedence: flags > environment (GOSSIP_*) > config file > preset defaults. An invalid setting exits with
status 2 and a message naming the key; a graceful leave (SIGTERM, SIGINT, POST /v1/leave) exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from gossip_agent import __version__
from gossip_agent.core.config import AgentConfig, ConfigError, from_mapping
from gossip_agent.io import event_loop
from gossip_agent.io.security import KeyringError

# Environment variable -> (config key path, kind).
ENV_VARS: dict[str, tuple[tuple[str, ...], str]] = {
    "GOSSIP_NAME": (("name",), "str"),
    "GOSSIP_BIND_ADDRESS": (("bindAddress",), "str"),
    "GOSSIP_PORT": (("port",), "int"),
    "GOSSIP_ADVERTISE_ADDRESS": (("advertiseAddress",), "str"),
    "GOSSIP_SEEDS": (("seeds",), "list"),
    "GOSSIP_DATA_DIR": (("storage", "dataDir"), "str"),
    "GOSSIP_ZONE": (("topology", "zone"), "str"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gossip-agent", description="Run one gossip agent.")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML config file (camelCase keys)")
    p.add_argument("--name", help="member name (unique in the cluster)")
    p.add_argument("--bind-address", metavar="A", help="address to listen on (UDP and HTTP)")
    p.add_argument("--port", type=int, metavar="P", help="port for UDP gossip and HTTP (default 7946)")
    p.add_argument("--advertise-address", metavar="A", help="address other members use to reach us")
    p.add_argument("--seed", action="append", metavar="HOST:PORT", help="seed member (repeatable)")
    p.add_argument("--data-dir", metavar="DIR", help="directory for durable state")
    p.add_argument("--log-level", default=os.environ.get("GOSSIP_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--event-loop", choices=event_loop.CHOICES, default=None,
                   help=f"asyncio, uvloop, or auto (uvloop if installed); default ${event_loop.ENV_VAR}, else "
                        f"{event_loop.DEFAULT} (io/event_loop.py says what uvloop trades)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def set_key_path(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """data[path[0]][path[1]]... = value, creating the sections on the way (config overrides)."""
    for key in path[:-1]:
        section = data.get(key)
        if not isinstance(section, dict):
            section = {} if section is None else section
            data[key] = section
        data = section
    data[path[-1]] = value


# A config is a few KiB; a bound keeps `--config /dev/zero` from reading forever.
_MAX_CONFIG_BYTES = 1024 * 1024


def _read_config_file(path: str) -> Any:
    """YAML, or JSON (a subset of YAML) without importing a YAML parser: the agent stays ~1 MiB smaller
    when its config is JSON, as the operator and `gossipctl up` write it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"--config: {path} is larger than {_MAX_CONFIG_BYTES // 1024} KiB; is it a config file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"  # reported below, with NUL bytes, as not text
    if "\0" in text:
        raise ConfigError(f"--config: {path} is not a text file (expected JSON or YAML)")
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow style that is not JSON: let the YAML parser decide
    import yaml  # deferred: see above

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None


def load_config(args: argparse.Namespace, environ: Mapping[str, str]) -> AgentConfig:
    """The config from file, environment and flags; raises ConfigError naming the key."""
    data: dict[str, Any] = {}
    if args.config:
        loaded = _read_config_file(args.config)
        if loaded is not None:
            if not isinstance(loaded, dict):
                raise ConfigError(f"--config: {args.config} must hold a mapping, got {type(loaded).__name__}")
            data = loaded
    for var, (path, kind) in ENV_VARS.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        value: Any = raw
        if kind == "int":
            # ASCII digits only: int() also takes "٣" and "3_000", which the same value in a file is refused for.
            if not (raw.isascii() and raw.isdigit()):
                raise ConfigError(f"{var}: expected an integer, got {raw!r}")
            value = int(raw)
        elif kind == "list":
            value = [s.strip() for s in raw.split(",") if s.strip()]
        set_key_path(data, path, value)
    flags: list[tuple[tuple[str, ...], Any]] = [
        (("name",), args.name), (("bindAddress",), args.bind_address), (("port",), args.port),
        (("advertiseAddress",), args.advertise_address), (("seeds",), args.seed),
        (("storage", "dataDir"), args.data_dir),
    ]
    for path, value in flags:
        if value is not None:
            set_key_path(data, path, value)
    return from_mapping(data)


def skip_system_trust_store(config: AgentConfig, environ: MutableMapping[str, str]) -> bool:
    """Point OpenSSL at an empty CA bundle unless our TLS client needs the system one; True if it did.

    aiohttp builds a verifying client TLS context as it is imported, which parses the system CA bundle:
    ~2 MiB resident per agent, for nothing: peers are verified against `security.tlsCaFile`, and so are
    client certificates (without the system store, a certificate from any public CA no longer passes).
    Only a certificate without a CA file makes our TLS client rely on the system store: then it stays.
    """
    sec = config.security
    if sec.tls_cert_file and not sec.tls_ca_file:
        return False
    environ["SSL_CERT_FILE"] = os.devnull
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args, os.environ)
        choice = event_loop.choice_from(args.event_loop, os.environ)
        skip_system_trust_store(config, os.environ)  # before aiohttp is imported
        factory, loop_name = event_loop.loop_factory(choice)
        from gossip_agent.io.extension import default_extensions
        from gossip_agent.io.runtime import Agent
        agent = Agent(config, extensions=default_extensions(config))
    except (ConfigError, KeyringError, event_loop.LoopUnavailable) as exc:
        print(f"gossip-agent: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("gossip_agent").info("event loop: %s", loop_name)
    try:
        return event_loop.run(agent.run(), factory)
    except OSError as exc:
        print(f"gossip-agent: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
