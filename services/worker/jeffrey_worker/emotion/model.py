"""The English emotion model: TF-IDF (words 1-2 + characters 2-5) → per-label logistic heads.

Two heads share the features: 28 GoEmotions labels (`fine`) and Ekman 6 + neutral (`ekman`).
Probabilities are Platt-calibrated on the dev split; `label` is the most probable Ekman class and
`fine_label` the most probable fine label inside that class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jeffrey_core.contract import EmotionDetection
from jeffrey_worker.emotion.artefact import DEFAULT_ARTEFACT, LinearHead, load_artefact
from jeffrey_worker.emotion.features import TfidfView, stack_rows

EKMAN_GROUPS: dict[str, tuple[str, ...]] = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": (
        "joy", "amusement", "approval", "excitement", "gratitude", "love",
        "optimism", "relief", "pride", "admiration", "desire", "caring",
    ),
    "sadness": ("sadness", "disappointment", "embarrassment", "grief", "remorse"),
    "surprise": ("surprise", "realization", "confusion", "curiosity"),
    "neutral": ("neutral",),
}  # fmt: skip


def _probability(p: float) -> float:
    # 4 decimals, kept inside (0, 1): a calibrated model is never certain.
    return min(0.9999, max(0.0001, round(float(p), 4)))


class EmotionResult(EmotionDetection):
    """One text's emotion in the worker: the contract's shape (stored on a memory, returned by
    /emotion/detect), which the detector fills in and the fallback adjusts."""

    lang: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


@dataclass
class EnglishEmotionModel:
    version: str
    views: list[TfidfView]
    fine: LinearHead
    ekman: LinearHead
    meta: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0

    @classmethod
    def load(cls, path: Path = DEFAULT_ARTEFACT) -> EnglishEmotionModel:
        started = time.perf_counter()
        meta, views, heads = load_artefact(path)
        return cls(
            version=str(meta["version"]),
            views=views,
            fine=heads["fine"],
            ekman=heads["ekman"],
            meta=meta,
            load_seconds=time.perf_counter() - started,
        )

    def probabilities(self, text: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Calibrated (fine, ekman) probability vectors for one text."""
        indices, values = stack_rows(self.views, text)
        return self.fine.probabilities(indices, values), self.ekman.probabilities(indices, values)

    def predict(self, texts: list[str]) -> list[EmotionResult]:
        return [self._result(*self.probabilities(text)) for text in texts]

    def _result(self, fine: np.ndarray[Any, Any], ekman: np.ndarray[Any, Any]) -> EmotionResult:
        scores = {name: _probability(p) for name, p in zip(self.ekman.labels, ekman, strict=True)}
        fine_scores = {name: _probability(p) for name, p in zip(self.fine.labels, fine, strict=True)}
        label = self.ekman.labels[int(np.argmax(ekman))]
        group = EKMAN_GROUPS[label]
        fine_label = max(group, key=lambda name: fine_scores[name])
        passing = [
            name for name, p, t in zip(self.ekman.labels, ekman, self.ekman.thresholds, strict=True) if p >= t
        ]
        return EmotionResult(
            label=label,
            fine_label=fine_label,
            confidence=scores[label],
            scores=scores,
            fine_scores=fine_scores,
            labels=passing,
            method="tfidf-logreg",
            model_version=self.version,
            lang="en",
        )
