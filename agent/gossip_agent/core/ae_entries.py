"""Entries of an anti-entropy push kept as their wire bytes, each decoded only when it is merged.

Why: a push inside every bound (512 entries of 900 minimal versions, 3.8 MiB) built ~137 MiB and took ~6 s
of CPU when it was decoded whole before the chunked merge began (review). Kept as bytes, a push costs its
own size until it is merged; the merge (`anti_entropy.PushMerge`) decodes a few entries per event-loop turn,
bounded by their bytes, so what one turn builds stays small whatever the request holds.

The decoder is passed in (ae_codec owns the wire format, codec_limits its limits; this module imports no codec).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import overload

from gossip_agent.core.kvstore import Entry, InvalidEntry


class UndecodableEntry(ValueError):
    """A pushed entry's bytes do not decode to a valid entry (the decoder's message says why)."""


class PushedEntries(Sequence[Entry]):
    """`len` entries of one push: `bounds[i]:bounds[i + 1]` of `data` is entry i's encoding. Indexing decodes
    (raising `UndecodableEntry`, or kvstore's `InvalidEntry` for one the decoder finds over a store limit
    before building it); nothing is cached, so each entry is built once by the one merge that asks.
    Equal to any sequence of the same decoded entries (a decoded request equals the one encoded)."""

    __slots__ = ("_bounds", "_data", "_decode")

    def __init__(self, data: bytes | memoryview, bounds: Sequence[int],
                 decode: Callable[[memoryview], Entry]) -> None:
        self._data = memoryview(data)
        self._bounds = tuple(bounds)
        self._decode = decode

    def __len__(self) -> int:
        return max(0, len(self._bounds) - 1)

    def wire_bytes(self, index: int) -> int:
        """Bytes entry `index` takes on the wire (what decoding it may build is in proportion)."""
        return self._bounds[index + 1] - self._bounds[index]

    def _entry(self, index: int) -> Entry:
        if not 0 <= index < len(self):
            raise IndexError(index)
        try:
            return self._decode(self._data[self._bounds[index]:self._bounds[index + 1]])
        except InvalidEntry:
            raise  # well formed but over the store's limits: skipped, as the store would
        except ValueError as err:
            raise UndecodableEntry(f"pushed entry {index}: {err}") from None

    @overload
    def __getitem__(self, index: int) -> Entry: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Entry, ...]: ...

    def __getitem__(self, index: int | slice) -> Entry | tuple[Entry, ...]:
        if isinstance(index, slice):
            return tuple(self._entry(i) for i in range(*index.indices(len(self))))
        return self._entry(index + len(self) if index < 0 else index)

    def __iter__(self) -> Iterator[Entry]:
        return (self._entry(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PushedEntries({len(self)} entries, {len(self._data)} bytes)"
