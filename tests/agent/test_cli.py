"""Agent flags/env/file precedence and config errors; gossipctl argument parsing and manifest expansion."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gossip_agent.__main__ import build_parser, load_config, skip_system_trust_store
from gossip_agent.cli.client import AgentClient, ClientError
from gossip_agent.cli.cluster import agent_configs, free_port_block, load_manifest
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
    ("", {"GOSSIP_PORT": "\u0663"}, "GOSSIP_PORT"),  # int() would read an Arabic-Indic 3
    ("", {"GOSSIP_PORT": "3_000"}, "GOSSIP_PORT"),
    ("[1, 2]\n", {}, "must hold a mapping"),
])
def test_config_errors_name_the_key(tmp_path: Path, content: str, env: dict[str, str], message: str) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(build_parser().parse_args(["--config", str(cfg)]), env)


@pytest.mark.parametrize(("content", "message"), [
    (bytes(range(256)) * 4, "not a text file"),          # a binary, e.g. --config /bin/ls
    (b"name: a\0b\n", "not a text file"),
    (b"#" * (1024 * 1024 + 1), "larger than 1024 KiB"),  # e.g. --config /dev/zero would never end
])
def test_a_config_that_is_not_text_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    cfg = tmp_path / "agent.conf"
    cfg.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(build_parser().parse_args(["--config", str(cfg)]), {})


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


# -- manifests: clear one-line errors in the manifest's own terms ------------------------------------------

@pytest.mark.parametrize(("spec", "message"), [
    ("{replica: 3}", r"^spec: unknown key\(s\) replica; known: antiEntropy, gossip, image, .*replicas, "),
    ("{gossip: {fanuot: 3}}",
     r"^spec.gossip: unknown key\(s\) fanuot; known: broadcast, coalesceDelay, fanout, immediateForward, "),
    ("{storage: {sise: 1Gi}}", r"^spec.storage: unknown key\(s\) sise; known: ephemeral, fsync, .*size, "),
    ("{gossip: 3}", r"^spec.gossip: expected a mapping, got int"),
])
def test_unknown_spec_keys_name_the_section_and_the_known_keys(tmp_path: Path, spec: str, message: str) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(f"kind: GossipCluster\nmetadata: {{name: x}}\nspec: {spec}\n")
    with pytest.raises(ConfigError, match=message):
        load_manifest(m)


def test_spec_keys_equal_the_crd() -> None:
    """gossipctl admits exactly the keys the CRD's spec admits (agent keys from the settings' declarations)."""
    from gossip_agent.cli.cluster import spec_keys

    crd = yaml.safe_load((REPO / "crds" / "gossipclusters.gossip-operator.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    keys = spec_keys()
    assert keys[""] == set(spec)
    for section, known in keys.items():
        if section:
            assert known == set(spec[section]["properties"]), section
    load_manifest(EXAMPLE)  # the example manifest passes


@pytest.mark.parametrize(("content", "message"), [
    (b"\x7fELF\x02\x01\x01\x00\x00\xd0\xff\xfe", "not a text file"),
    (b"kind: GossipCluster\x00\n", "not a text file"),
    (b"kind: GossipCluster\nspec: [unclosed\n", r"is not valid YAML: .*\(line \d+, column \d+\)$"),
    (b"kind: GossipCluster\nmetadata: {name: ../../etc}\n", "metadata.name"),
    (b"#" * (2 << 20), "larger than 1 MiB"),
])
def test_a_bad_manifest_is_one_clean_line(tmp_path: Path, content: bytes, message: str) -> None:
    m = tmp_path / "m.yaml"
    m.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_manifest(m)
    assert "\n" not in str(exc.value) and re.search(message, str(exc.value)), str(exc.value)


def test_gossipctl_up_on_a_binary_file_says_so_in_one_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from gossip_agent.cli.main import main

    binary = tmp_path / "ls"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    # (--exit-when-converged and a free port: were the check gone, this would not run a cluster for long.)
    assert main(["up", "-f", str(binary), "--dir", str(tmp_path / "lc"), "--exit-when-converged", "--timeout", "5",
                 "--base-port", str(free_port_block(5))]) == 2
    err = capsys.readouterr().err
    assert err == f"gossipctl: invalid configuration: -f: {binary} is not a text file (not UTF-8); expected a " \
                  "YAML manifest\n"
    assert not (tmp_path / "lc").exists(), "nothing is created for a bad manifest"


# -- parsing: no abbreviations, addresses checked at the edge ----------------------------------------------

def _all_parsers(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_no_parser_accepts_abbreviated_options(capsys: pytest.CaptureFixture[str]) -> None:
    parsers = list(_all_parsers(ctl_parser()))
    assert len(parsers) > 10 and all(not p.allow_abbrev for p in parsers)
    with pytest.raises(SystemExit):
        ctl_parser().parse_args(["up", "-f", "x.yaml", "--replica", "3"])
    assert "unrecognized arguments: --replica 3" in capsys.readouterr().err


@pytest.mark.parametrize(("addr", "message"), [
    ("127.0.0.1:99999", "invalid port"), ("127.0.0.1:0", "invalid port"), ("127.0.0.1:http", "invalid port"),
    ("ftp://127.0.0.1:1", "scheme must be http or https"), (":7946", "no host"),
])
def test_a_bad_address_is_reported_as_such(capsys: pytest.CaptureFixture[str], addr: str, message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        ctl_parser().parse_args(["status", "--addr", addr])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ClientError, match=message):
        AgentClient(addr)


@pytest.mark.parametrize("addr", ["127.0.0.1:7946", "[::1]:7946", "https://node-0.example:8443", "localhost"])
def test_good_addresses_pass(addr: str) -> None:
    assert ctl_parser().parse_args(["members", "--addr", addr]).addr == addr


def test_members_and_status_output_options() -> None:
    p = ctl_parser()
    assert p.parse_args(["members"]).output == "text"
    assert p.parse_args(["members", "-o", "wide"]).output == "wide"
    assert p.parse_args(["status", "-o", "json"]).output == "json"
    assert p.parse_args(["status", "--json"]).json is True  # the older flag still works
    with pytest.raises(SystemExit):
        p.parse_args(["status", "-o", "wide"])


def test_status_text_is_readable() -> None:
    from gossip_agent.cli.main import status_lines

    lines = status_lines({"name": "a", "address": "127.0.0.1", "port": 7946, "incarnation": 3, "joined": True,
                          "members": {"alive": 2, "suspect": 1, "dead": 0, "left": 0},
                          "state": {"root": "ab" * 32, "keys": 4},
                          "convergence": {"converged": False, "lastConvergenceSeconds": None}})
    assert status_lines({"convergence": {"lastConvergenceSeconds": 0.13666057586669922, "fraction": 1.0}}) == [
        "convergence:", "  lastConvergenceSeconds:  0.137", "  fraction:                1"]
    assert lines == [
        "name:         a",
        "address:      127.0.0.1:7946",
        "incarnation:  3",
        "joined:       yes",
        "members:      2 alive, 1 suspect, 0 dead, 0 left",
        "state:",
        "  root:  " + "ab" * 32,
        "  keys:  4",
        "convergence:",
        "  converged:               no",
        "  lastConvergenceSeconds:  -",
    ]


# -- hints name the gossipctl that runs -------------------------------------------------------------------

def test_hints_name_a_gossipctl_that_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gossip_agent.cli.main import ctl_command

    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    exe = venv_bin / "gossipctl"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [".venv/bin/gossipctl", "up"])
    assert ctl_command() == ".venv/bin/gossipctl"  # not on PATH: the path that works from here
    monkeypatch.setattr(sys, "argv", [str(exe), "up"])
    assert ctl_command() == ".venv/bin/gossipctl"
    monkeypatch.chdir("/")
    assert ctl_command() == str(exe)  # outside the directory: absolute
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin")
    assert ctl_command() == "gossipctl"  # on PATH: the name is enough
    monkeypatch.setattr(sys, "argv", ["/x/gossip_agent/cli/__main__.py"])
    assert ctl_command().endswith(" -m gossip_agent.cli")


# -- the cluster directory -------------------------------------------------------------------------------

def test_the_cluster_directory_lock_names_its_holder_and_clean_keeps_it(tmp_path: Path) -> None:
    from gossip_agent.cli.cluster import LOCK_FILE, ClusterDirBusy, DirLock, clean_dir

    d = tmp_path / "lc"
    with DirLock(d):
        with pytest.raises(ClusterDirBusy, match=rf"in use by another `gossipctl up` \(pid {os.getpid()}\)"):
            DirLock(d)
        (d / "data" / "x-0").mkdir(parents=True)
        (d / "x-0.log").write_text("log")
        clean_dir(d)
        assert [p.name for p in d.iterdir()] == [LOCK_FILE]
    with DirLock(d):  # released: the next holder gets it
        pass
    # In another process too: the kernel, not a PID file, decides.
    code = ("import sys, time; from pathlib import Path; from gossip_agent.cli.cluster import DirLock; "
            f"lock = DirLock(Path({str(d)!r})); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ClusterDirBusy, match=rf"\(pid {holder.pid}\)"):
            DirLock(d)
    finally:
        holder.kill()
        holder.wait(10)
    with DirLock(d):  # the holder died (SIGKILL): its lock went with it
        pass


def test_up_defaults_to_a_directory_per_cluster_name() -> None:
    from gossip_agent.cli.main import up_plan

    manifest, n, workdir = up_plan(ctl_parser().parse_args(["up", "-f", str(EXAMPLE)]))
    assert (manifest.name, n) == ("demo", 5) and workdir == Path(".local-cluster", "demo").resolve()
    assert up_plan(ctl_parser().parse_args(["up", "-f", str(EXAMPLE), "--dir", "x"]))[2] == Path("x").resolve()


def test_leftover_agents_of_a_killed_up_are_named(tmp_path: Path) -> None:
    from gossip_agent.cli.main import _leftover_pids

    (tmp_path / "agents.json").write_text(json.dumps({"agents": [
        {"name": "a-0", "pid": os.getpid()}, {"name": "a-1", "pid": None}]}))
    assert _leftover_pids(tmp_path) == [os.getpid()]
    (tmp_path / "agents.json").write_text("{not json")
    assert _leftover_pids(tmp_path) == []


@pytest.mark.parametrize(("flags", "message"), [
    (["--replicas", "5000"], "replicas (--replicas or spec.replicas): must be 1..1000"),
    (["--base-port", "65534"], "--base-port: agents use ports base..base+4, so base must be 1..65531"),
    (["--restart-delay", "-1"], "--restart-delay: must be 0..3600"),
])
def test_up_checks_its_numbers_first(tmp_path: Path, flags: list[str], message: str) -> None:
    from gossip_agent.cli.main import up_plan

    with pytest.raises(ConfigError) as exc:
        up_plan(ctl_parser().parse_args(["up", "-f", str(EXAMPLE), "--dir", str(tmp_path / "lc"), *flags]))
    assert message in str(exc.value)
    assert not (tmp_path / "lc").exists()
