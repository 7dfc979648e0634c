"""Session 16: a snapshot or log written by an older version (or edited on disk) restores no key that no client
or peer may write now (core/keys.py).

Before, `KvStore.restore` and the log replay built whatever the data directory held: a key with an escape
sequence or a `..` segment, or a plain value under `crdt/counters/`, came back on restart, broke watchers and
logs here and went on to every peer (which now skips it: a divergence for good). Now such snapshot items are
left out, counted (`gossip_state_recovery_problems_total{problem="snapshot_item_refused"}`), kept in
`wal.rejected` and logged once each with the reason; log records likewise (`record_unreadable`); the rest of
the snapshot and log is restored.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from gossip_agent.core import hlc
from gossip_agent.core.crdt import ORSet, PNCounter
from gossip_agent.core.kvstore import CrdtEntry, KvStore, RefusedItem, entry_to_plain
from gossip_agent.io.persistence import _read_records
from tests.hostile.agent_support import restored, write_data_dir

TS = hlc.Hlc(1_000, 0, "w")
BAD_ENTRIES = [
    [0, "evil\x1b[2J", ["w", 1], [["w", 1, 1_000, 0, b"x"]]],
    [0, "up/../etc", ["w", 1], [["w", 1, 1_000, 0, b"x"]]],
    [0, "crdt/counters/plain", ["w", 1], [["w", 1, 1_000, 0, b"x"]]],         # a plain value under a prefix
    entry_to_plain(CrdtEntry("old/counter", PNCounter().increment("w", 1), TS)),  # a CRDT outside them
    entry_to_plain(CrdtEntry("crdt/counters/set", ORSet().add("w", "e"), TS)),  # another CRDT kind
]


def _snapshot_with_bad_keys() -> dict[str, object]:
    good = KvStore("solo@aaaaaa")
    good.local_put("kept", b"v", 1_000)
    good.update_crdt("crdt/counters/ok", PNCounter, lambda c, n, _: c.increment(n, 1), 1_000)
    plain = good.snapshot()
    entries = plain["entries"]
    assert isinstance(entries, list)
    entries.extend(BAD_ENTRIES)
    plain["graveyard"] = [["grave\x00nul", ["w", 1], hlc.to_plain(hlc.ZERO)], ["grave-ok", ["w", 1], hlc.to_plain(TS)]]
    return plain


def test_restore_leaves_out_bad_keys_and_wrong_kinds_and_keeps_the_rest() -> None:
    refused: list[RefusedItem] = []
    store = KvStore.restore(_snapshot_with_bad_keys(), refused=refused)
    assert store.all_keys() == ["crdt/counters/ok", "kept"]
    assert store.was_collected("grave-ok") and not store.was_collected("grave\x00nul")
    assert [r.key for r in refused] == [e[1] for e in BAD_ENTRIES] + ["grave\x00nul"]
    assert "control character U+001B" in refused[0].why and "'..' path segment" in refused[1].why
    assert "pncounter only" in refused[2].why and "CRDTs live only under" in refused[3].why
    with pytest.raises(ValueError, match="control character"):
        KvStore.restore(_snapshot_with_bad_keys())  # (no list to report them in: refused whole)


def test_a_data_dir_with_bad_keys_loads_what_is_valid_and_says_so(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "d"
    bad_record = msgpack.packb([2, "log\x1bkey", "remote", [0, "log\x1bkey", ["w", 1], [["w", 1, 1_000, 0, b"x"]]]])
    kind_record = msgpack.packb([2, "crdt/sets/v", "local", [0, "crdt/sets/v", ["w", 1], [["w", 1, 1_000, 0, b"x"]]]])
    write_data_dir(data, _snapshot_with_bad_keys(), [bad_record, kind_record])
    with restored(data, caplog) as svc:
        store = svc.store
        assert store.all_keys() == ["after", "crdt/counters/ok", "kept"]
        assert svc.stats.recovery == {"snapshot_item_refused": len(BAD_ENTRIES) + 1, "record_unreadable": 2}
        aside, _ = _read_records((data / "wal.rejected").read_bytes())
        assert len(aside) == len(BAD_ENTRIES) + 3 and bad_record in aside and kind_record in aside
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == len(BAD_ENTRIES) + 3, lines  # one line per item left out
        assert any("'evil\\x1b[2J'" in line and "control character U+001B" in line for line in lines), lines
        assert any("'crdt/counters/plain'" in line and "pncounter only" in line for line in lines), lines
        assert all("\x1b" not in line and "\x00" not in line for line in lines)  # (keys logged escaped)
