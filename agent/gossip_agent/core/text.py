"""Which characters a name, key or printed value may not carry: one definition for the codec, the config, the
HTTP edge and the CLI.

C0/C1 control characters and DEL are refused in identifiers (member names, keys) and escaped when printed:
one forged Alive named "x\\x1b[2J...\\nfake-line" used to clear a terminal and forge lines in `gossipctl
members`, and NUL or newlines in keys break logs and the paths keys often become.
"""

from __future__ import annotations

import re

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def first_control_char(text: str) -> int | None:
    """Index of the first control character in `text`, or None."""
    found = CONTROL_CHARS.search(text)
    return None if found is None else found.start()


def escape_control_chars(text: str) -> str:
    """`text` safe for a terminal: each control character as \\xNN."""
    return CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
