"""Learn the dream batch size B from how batches went: bounded, persisted in Redis, shared by all workers.

Rules, applied after each batch:
- failure or time limit hit → B halves;
- duration above the target → B shrinks by 20 %;
- duration under half the target and quality not collapsing (≥ 80 % of its running average) → B grows
  by 25 % (+1 so small sizes move);
- otherwise B stays.
B never leaves [min, max]. The time budget is the target (default 15 s), well below the 60 s hard limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class TunerStore(Protocol):
    def load(self) -> tuple[int | None, float | None]: ...

    def save(self, size: int, quality_average: float | None) -> None: ...


@dataclass
class BatchSizeTuner:
    store: TunerStore
    minimum: int = 25
    maximum: int = 500
    initial: int = 100
    target_seconds: float = 15.0
    quality_smoothing: float = 0.3

    def current(self) -> int:
        size, _ = self.store.load()
        return self._bounded(size if size is not None else self.initial)

    def record(self, size: int, seconds: float, ok: bool, quality: float | None = None) -> int:
        """Update B from one batch's outcome; returns the new B."""
        current, quality_average = self.store.load()
        base = self._bounded(current if current is not None else size)
        if not ok:
            new = base // 2
        elif seconds > self.target_seconds:
            new = int(base * 0.8)
        elif seconds < self.target_seconds / 2 and (
            quality is None or quality_average is None or quality >= 0.8 * quality_average
        ):
            new = int(base * 1.25) + 1
        else:
            new = base
        if quality is not None:
            quality_average = (
                quality
                if quality_average is None
                else (1 - self.quality_smoothing) * quality_average + self.quality_smoothing * quality
            )
        new = self._bounded(new)
        self.store.save(new, quality_average)
        return new

    def _bounded(self, size: int) -> int:
        return max(self.minimum, min(self.maximum, int(size)))


class RedisTunerStore:
    """B and the quality average in two Redis keys (no TTL: owned by the tuner, rebuilt from defaults)."""

    def __init__(self, client: object, size_key: str, quality_key: str) -> None:
        self.client = client
        self.size_key = size_key
        self.quality_key = quality_key

    def load(self) -> tuple[int | None, float | None]:
        size, quality = self.client.mget(self.size_key, self.quality_key)  # type: ignore[attr-defined]
        return (int(size) if size is not None else None, float(quality) if quality is not None else None)

    def save(self, size: int, quality_average: float | None) -> None:
        mapping: dict[str, str] = {self.size_key: str(size)}
        if quality_average is not None:
            mapping[self.quality_key] = f"{quality_average:.6f}"
        self.client.mset(mapping)  # type: ignore[attr-defined]
