"""Agent flags/env/file precedence and config errors; gossipctl argument parsing and manifest expansion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gossip_agent.__main__ import build_parser, load_config, skip_system_trust_store
from gossip_agent.cli.cluster import agent_configs, load_manifest
from gossip_agent.cli.main import build_parser as ctl_parser
from gossip_agent.core.config import ConfigError, from_mapping

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gossipcluster.yaml"


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("name: from-file\nport: 7000\npreset: local\nmembership: {probeInterval: 2s, probeTimeout: 1s}\n"
                   "seeds: [a:1]\n")
    env = {"GOSSIP_NAME": "from-env", "GOSSIP_PORT": "7001", "GOSSIP_SEEDS": "b:2, c:3", "GOSSIP_DATA_DIR": "/d"}
    args = build_parser().parse_args(["--config", str(cfg), "--port", "7002"])
    c = load_config(args, env)
    assert (c.name, c.port, c.seeds, c.storage.data_dir) == ("from-env", 7002, ("b:2", "c:3"), "/d")
    assert c.preset == "local" and c.membership.probe_interval == 2.0
    assert load_config(build_parser().parse_args(["--config", str(cfg)]), {}).name == "from-file"


@pytest.mark.parametrize(("content", "env", "message"), [
    ("membership: {probeTimeout: 5s}\n", {}, "membership.probeTimeout"),
    ("gossip: {fanuot: 3}\n", {}, "fanuot"),
    ("", {"GOSSIP_PORT": "seven"}, "GOSSIP_PORT"),
    ("[1, 2]\n", {}, "must hold a mapping"),
])
def test_config_errors_name_the_key(tmp_path: Path, content: str, env: dict[str, str], message: str) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(build_parser().parse_args(["--config", str(cfg)]), env)


def test_json_config_is_read_without_a_yaml_parser(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.json"
    cfg.write_text('{"name": "j", "membership": {"probeInterval": "2s", "probeTimeout": "1s"}}')
    code = ("import sys; from gossip_agent.__main__ import build_parser, load_config; "
            f"c = load_config(build_parser().parse_args(['--config', {str(cfg)!r}]), {{}}); "
            "print(c.name, c.membership.probe_interval, 'yaml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split() == ["j", "2.0", "False"]


def test_yaml_flow_mapping_that_is_not_json_still_loads(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("{name: flow, port: 7005}\n")
    c = load_config(build_parser().parse_args(["--config", str(cfg)]), {})
    assert (c.name, c.port) == ("flow", 7005)


@pytest.mark.parametrize(("security", "skipped"), [
    ({}, True),                                                        # plain HTTP
    ({"tlsCertFile": "c", "tlsKeyFile": "k", "tlsCaFile": "ca"}, True),  # peers verified against the CA file
    ({"tlsCertFile": "c", "tlsKeyFile": "k"}, False),                  # our client relies on the system store
])
def test_system_ca_bundle_is_skipped_unless_our_tls_client_needs_it(security: dict[str, str], skipped: bool) -> None:
    env: dict[str, str] = {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}
    assert skip_system_trust_store(from_mapping({"security": security}), env) is skipped
    assert (env["SSL_CERT_FILE"] == os.devnull) is skipped


def test_invalid_config_exits_2_with_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("gossip: {mtu: 10}\n")
    proc = subprocess.run([sys.executable, "-m", "gossip_agent", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert "gossip.mtu" in proc.stderr


def test_manifest_expands_to_valid_agent_configs(tmp_path: Path) -> None:
    m = load_manifest(EXAMPLE)
    assert m.name == "demo" and m.replicas == 5
    configs = agent_configs(m, base_port=9000, replicas=4, data_root=tmp_path)
    assert [c["port"] for c in configs] == [9000, 9001, 9002, 9003]
    assert configs[3]["seeds"] == ["127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"]
    cfg = from_mapping(configs[1])
    assert cfg.name == "demo-1" and cfg.gossip.fanout == 3 and cfg.storage.data_dir == str(tmp_path / "demo-1")


def test_manifest_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("kind: Deployment\n")
    with pytest.raises(ConfigError, match="GossipCluster"):
        load_manifest(bad)
    bad.write_text("kind: GossipCluster\nspec: {replicas: 2, gossip: {fanout: 99}}\n")
    with pytest.raises(ConfigError, match="gossip.fanout"):
        agent_configs(load_manifest(bad), base_port=9000)


def test_gossipctl_parser() -> None:
    p = ctl_parser()
    args = p.parse_args(["up", "-f", "x.yaml", "--base-port", "8000", "--replicas", "3", "--exit-when-converged"])
    assert (args.command, args.base_port, args.replicas, args.exit_when_converged) == ("up", 8000, 3, True)
    assert p.parse_args(["members", "--addr", "127.0.0.1:1"]).addr == "127.0.0.1:1"
    assert p.parse_args(["status"]).addr == "127.0.0.1:7946"
    with pytest.raises(SystemExit):
        p.parse_args(["up"])


def test_gossipctl_unreachable_agent_is_a_clear_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "gossip_agent.cli", "status", "--addr", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "cannot reach the agent" in proc.stderr
