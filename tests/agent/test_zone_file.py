"""The zone file (a downward-API volume the operator fills): read with a bound, validated, missing or empty =
unknown; and the topology section of the config refuses what the agent could not use."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossip_agent.core.config import ConfigError, from_mapping
from gossip_agent.io.zone_file import MAX_BYTES, read_zone_file


def test_a_zone_file_gives_the_zone_and_its_trailing_newline_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "zone"
    path.write_text("eu-west-1a\n")
    assert read_zone_file(str(path)).zone == "eu-west-1a"


def test_missing_and_empty_files_mean_unknown_without_error(tmp_path: Path) -> None:
    assert read_zone_file(str(tmp_path / "absent")).zone is None
    assert read_zone_file(str(tmp_path / "absent")).error is None
    (tmp_path / "empty").write_text("")
    assert read_zone_file(str(tmp_path / "empty")).zone is None


@pytest.mark.parametrize("content", [b"two words", b"\xff\xfe", b"z" * 64, b"x" * (MAX_BYTES + 1), b"-a"])
def test_invalid_content_is_unknown_with_a_reason(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "zone"
    path.write_bytes(content)
    reading = read_zone_file(str(path))
    assert reading.zone is None and reading.error is not None and str(path) in reading.error


def test_a_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    reading = read_zone_file(str(tmp_path))
    assert reading.zone is None and reading.error is not None


@pytest.mark.parametrize(("section", "message"), [
    ({"zone": "a b"}, "topology.zone: zone 'a b' is not a label value"),
    ({"zone": ""}, "topology.zone: must not be empty"),
    ({"crossZoneFraction": 0}, "topology.crossZoneFraction: must be 0.01..1"),
    ({"crossZoneFraction": 1.01}, "topology.crossZoneFraction: must be 0.01..1"),
    ({"crossZoneFraction": float("nan")}, "topology.crossZoneFraction: must be 0.01..1, got nan"),
    ({"mode": "nearest"}, "topology.mode: must be one of aware, random"),
    ({"zonefile": "/x"}, "unknown key(s) zonefile in section 'topology'"),
])
def test_the_topology_section_refuses_what_the_agent_cannot_use(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_mapping({"topology": section})


def test_the_topology_section_reads_back() -> None:
    cfg = from_mapping({"topology": {"zone": "zone-a", "zoneFile": "/etc/gossip/podinfo/zone",
                                     "crossZoneFraction": 0.2, "mode": "random"}})
    assert (cfg.topology.zone, cfg.topology.zone_file, cfg.topology.cross_zone_fraction, cfg.topology.mode) == (
        "zone-a", "/etc/gossip/podinfo/zone", 0.2, "random")
    assert from_mapping({}).topology.cross_zone_fraction == 0.15 and from_mapping({}).topology.mode == "aware"


def test_the_zone_can_come_from_the_environment() -> None:
    from gossip_agent.__main__ import build_parser, load_config

    cfg = load_config(build_parser().parse_args([]), {"GOSSIP_ZONE": "eu-west-1b"})
    assert cfg.topology.zone == "eu-west-1b"
    with pytest.raises(ConfigError, match="topology.zone"):
        load_config(build_parser().parse_args([]), {"GOSSIP_ZONE": "no spaces please"})
