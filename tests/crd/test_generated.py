"""The CRD's agent sections and the docs' configuration reference are what tools/gen_settings.py writes from
the settings' declarations (agent/gossip_agent/core/config.py): edit the declarations, never the copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import gen_settings


@pytest.mark.parametrize("path", sorted(gen_settings.expected()), ids=lambda p: str(p.relative_to(gen_settings.ROOT)))
def test_committed_copy_is_what_the_generator_writes(path: Path) -> None:
    expected = gen_settings.expected()
    assert path in expected
    committed = path.read_text()
    assert committed == expected[path], (
        f"{path} differs from the settings declared in agent/gossip_agent/core/config.py: "
        f"run {gen_settings.COMMAND} and commit the result")


def test_the_generator_leaves_the_hand_written_crd_alone() -> None:
    """Outside the marked blocks the CRD is byte-for-byte what was committed (operator fields, CEL, columns)."""
    text = gen_settings.CRD.read_text()
    outside = gen_settings._CRD_BLOCK.sub("", text)
    assert gen_settings._CRD_BLOCK.sub("", gen_settings.render_crd(text)) == outside
    assert "x-kubernetes-validations" in outside and "additionalPrinterColumns" in outside


def test_a_stale_copy_is_reported_with_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    stale = gen_settings.CRD.read_text().replace("maxMembers:", "maxMembrs:", 1)
    copy = tmp_path / "crd.yaml"
    copy.write_text(stale)
    monkeypatch.setattr(gen_settings, "CRD", copy)
    monkeypatch.setattr(gen_settings, "CRD_COPIES", (copy,))
    assert gen_settings.main(["--check"]) == 1
    assert f"run {gen_settings.COMMAND}" in capsys.readouterr().out
    assert gen_settings.main([]) == 0 and copy.read_text() == gen_settings.render_crd(stale)
    assert "maxMembers:" in copy.read_text() and "maxMembrs" not in copy.read_text()
