"""Write the agent settings' generated copies: the CRD's agent sections (both copies) and the configuration
reference in docs/agent-api.md, from the declarations in agent/gossip_agent/core/config.py.

    .venv/bin/python tools/gen_settings.py           # rewrite the generated blocks
    .venv/bin/python tools/gen_settings.py --check   # exit 1 naming the files that differ

Only the text between the BEGIN/END generated markers changes; everything else of the CRD (operator-only
fields, CEL rules, printer columns, comments) stays as written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from gossip_agent.core.config import SECTIONS
from gossip_agent.core.settings_schema import crd_properties, reference_table

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "gossipclusters.gossip-operator.dev.yaml"
CRD_COPIES = (CRD, ROOT / "charts" / "gossip-operator" / "crds" / CRD.name)
DOC = ROOT / "docs" / "agent-api.md"
COMMAND = ".venv/bin/python tools/gen_settings.py"

_CRD_BLOCK = re.compile(
    r"^(?P<indent>[ ]*)# BEGIN generated: (?P<section>\w+) settings[^\n]*\n.*?^(?P=indent)# END generated[^\n]*\n",
    re.MULTILINE | re.DOTALL)
_DOC_BLOCK = re.compile(r"(<!-- BEGIN generated: agent settings[^\n]*-->\n).*?(<!-- END generated: agent settings -->)",
                        re.DOTALL)


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, as the hand-written parts of the CRD are."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _yaml_block(section: str, indent: str) -> str:
    text = yaml.dump(crd_properties(section), Dumper=_Dumper, sort_keys=False, width=1_000_000,
                     allow_unicode=True, default_flow_style=False)
    return "".join(f"{indent}{line}\n" for line in text.splitlines())


def render_crd(text: str) -> str:
    """The CRD text with each agent section's generated block rewritten."""
    sections = {key for key, _, _ in SECTIONS}
    found: set[str] = set()

    def block(match: re.Match[str]) -> str:
        indent, section = match["indent"], match["section"]
        if section not in sections:
            raise SystemExit(f"{CRD.name}: generated block for unknown section {section!r}")
        found.add(section)
        return (f"{indent}# BEGIN generated: {section} settings (from agent/gossip_agent/core/config.py by "
                f"{COMMAND}; do not edit)\n{_yaml_block(section, indent)}{indent}# END generated\n")

    out = _CRD_BLOCK.sub(block, text)
    missing = sorted(sections - found)
    if missing:
        raise SystemExit(f"{CRD.name}: no generated block for section(s) {', '.join(missing)}")
    return out


def render_doc(text: str) -> str:
    """docs/agent-api.md with the configuration reference rewritten."""
    out, count = _DOC_BLOCK.subn(lambda m: m[1] + reference_table() + m[2], text)
    if count != 1:
        raise SystemExit(f"{DOC.name}: expected one generated settings block, found {count}")
    return out


def expected() -> dict[Path, str]:
    """Every generated file with the content the generator writes."""
    crd = render_crd(CRD.read_text())
    return {**dict.fromkeys(CRD_COPIES, crd), DOC: render_doc(DOC.read_text())}


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    stale = [path for path, text in expected().items() if path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{_show(path)} differs from the settings in core/config.py: run {COMMAND}")
        return 1 if stale else 0
    for path in stale:
        path.write_text(expected()[path])
        print(f"wrote {_show(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
