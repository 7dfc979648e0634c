"""The randomness a core needs, as a protocol: drivers pass `random.Random(seed)` (sim) or a system RNG."""

from collections.abc import MutableSequence, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Rng(Protocol):
    """Subset of `random.Random` used by the cores; any seeded instance satisfies it."""

    def random(self) -> float: ...

    def randrange(self, start: int, stop: int | None = ..., step: int = ...) -> int: ...

    def shuffle(self, x: MutableSequence[Any]) -> None: ...

    def sample(self, population: Sequence[T], k: int) -> list[T]: ...

    def getrandbits(self, k: int) -> int: ...
