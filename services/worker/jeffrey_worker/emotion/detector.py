"""The detector workers use: language routing (fr → lexicon, else English model) plus the fallback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jeffrey_core.contract import EKMAN_LABELS, MAX_TEXT_CHARS
from jeffrey_worker.emotion.artefact import DEFAULT_ARTEFACT
from jeffrey_worker.emotion.french import FrenchLexiconModel
from jeffrey_worker.emotion.language import detect_language
from jeffrey_worker.emotion.model import EmotionResult, EnglishEmotionModel

FALLBACK_VERSION = "fallback-1"
FALLBACK_CONFIDENCE = 0.15


@dataclass
class EmotionDetector:
    english: EnglishEmotionModel
    french: FrenchLexiconModel

    @classmethod
    def load(cls, path: Path = DEFAULT_ARTEFACT) -> EmotionDetector:
        return cls(english=EnglishEmotionModel.load(path), french=FrenchLexiconModel())

    @property
    def version(self) -> str:
        return self.english.version

    def detect(self, texts: list[str]) -> list[EmotionResult]:
        """One result per text, in order.

        Each text is read up to MAX_TEXT_CHARS (the contract's limit, which the API and the worker
        already enforce): whatever reaches the models, the work per text is bounded."""
        texts = [bounded(t) for t in texts]
        langs = [detect_language(t) for t in texts]
        results: list[EmotionResult | None] = [None] * len(texts)
        french = [i for i, lang in enumerate(langs) if lang == "fr"]
        other = [i for i, lang in enumerate(langs) if lang != "fr"]
        for i, result in zip(french, self.french.predict([texts[i] for i in french]), strict=True):
            results[i] = result
        for i, result in zip(other, self.english.predict([texts[i] for i in other]), strict=True):
            result.lang = langs[i]
            results[i] = result
        return [r for r in results if r is not None]


def bounded(text: str) -> str:
    """The part of `text` the models read: at most MAX_TEXT_CHARS characters."""
    return text[:MAX_TEXT_CHARS]


def fallback_result(text: str, reason: str) -> EmotionResult:
    """What annotation answers while the model is unavailable: neutral, said plainly, low confidence.

    The French lexicon still runs (it is pure Python and cannot be "slow" the way the model can), so
    French texts keep a useful label; `method` names the fallback either way.
    """
    text = bounded(text)
    lang = detect_language(text)
    if lang == "fr":
        result = FrenchLexiconModel().predict([text])[0]
        result.confidence = min(result.confidence, FALLBACK_CONFIDENCE * 2)
    else:
        share = round((1 - FALLBACK_CONFIDENCE) / (len(EKMAN_LABELS) - 1), 4)
        scores = {label: share for label in EKMAN_LABELS}
        scores["neutral"] = FALLBACK_CONFIDENCE
        result = EmotionResult(
            label="neutral",
            fine_label="neutral",
            confidence=FALLBACK_CONFIDENCE,
            scores=scores,
            fine_scores={},
            labels=["neutral"],
            method="",
            model_version="",
            lang=lang,
        )
    result.method = f"fallback:{reason}"
    result.model_version = FALLBACK_VERSION
    return result
