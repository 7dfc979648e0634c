"""A store loaded from disk is held to the context bound every network path holds entries to.

`MAX_CONTEXT_NODES` (16,384 writer nodes per value entry's context) was checked on rumors, replicate,
anti-entropy pushes and answers and client contexts, but `KvStore.restore` built whatever a snapshot held: a
crafted or damaged data directory could load an entry of any context size (then re-gossiped, refused by every
peer) or a graveyard item whose context made every later write of its key fail the merged bound. Now the
snapshot's items over the bound are left out, counted (`gossip_state_recovery_problems_total{problem=
"snapshot_item_refused"}`), kept in `wal.rejected` and logged with the data dir, the key and the limit, as an
unreadable log record is; everything else in the snapshot is restored. Log records were already refused at
decode (`record_unreadable`): checked here too.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from gossip_agent.core import hlc
from gossip_agent.core.kvstore import KvStore, RefusedItem
from gossip_agent.core.vector_clock import MAX_CONTEXT_NODES
from gossip_agent.io.persistence import _read_records
from tests.hostile.agent_support import restored, write_data_dir

_WIDE = [x for i in range(MAX_CONTEXT_NODES + 1) for x in (f"w{i}", 1)]  # one writer node past the bound


def _snapshot_with_wide_items() -> dict[str, object]:
    good = KvStore("solo@aaaaaa")
    good.local_put("kept", b"v", 1_000)
    good.local_put("gone", b"v", 1_000)
    good.local_delete("gone", 1_001)
    plain = good.snapshot()
    entries = plain["entries"]
    assert isinstance(entries, list)
    entries.append([0, "wide", _WIDE, [["w0", 1, 1_000, 0, b"x"]]])
    plain["graveyard"] = [["wide-grave", _WIDE, hlc.to_plain(hlc.ZERO)]]
    return plain


def test_restore_leaves_out_items_over_the_bound_and_keeps_the_rest() -> None:
    refused: list[RefusedItem] = []
    store = KvStore.restore(_snapshot_with_wide_items(), refused=refused)
    assert store.entry("kept") is not None and store.entry("gone") is not None
    assert store.entry("wide") is None and not store.was_collected("wide-grave")
    assert [(r.kind, r.key, r.nodes) for r in refused] == [("entry", "wide", MAX_CONTEXT_NODES + 1),
                                                           ("graveyard item", "wide-grave", MAX_CONTEXT_NODES + 1)]
    with pytest.raises(ValueError, match="limit 16384"):
        KvStore.restore(_snapshot_with_wide_items())  # (no list to report them in: refused whole)


def test_a_data_dir_over_the_bound_loads_what_is_valid_and_says_so(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "d"
    wide_record = msgpack.packb([2, "wide-log", "remote", [0, "wide-log", _WIDE, [["w0", 1, 1_000, 0, b"x"]]]])
    write_data_dir(data, _snapshot_with_wide_items(), [wide_record])
    with restored(data, caplog) as svc:
        store = svc.store
        assert store.entry("kept") is not None and store.entry("after") is not None
        assert store.entry("wide") is None and store.entry("wide-log") is None
        assert not store.was_collected("wide-grave")
        assert svc.stats.recovery == {"snapshot_item_refused": 2, "record_unreadable": 1}
        aside, _ = _read_records((data / "wal.rejected").read_bytes())
        assert len(aside) == 3 and aside[0][:1] == b"\x94" and wide_record in aside
        assert msgpack.unpackb(aside[0])[1] == "wide"  # the entry as a log record, whole
        logged = caplog.text
        assert "'wide'" in logged and "'wide-grave'" in logged and f"limit {MAX_CONTEXT_NODES}" in logged
        assert "wal.rejected" in logged and str(data) in logged
