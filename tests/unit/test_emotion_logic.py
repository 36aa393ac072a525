"""Emotion logic without a broker: featuriser equivalence, language, French lexicon, breaker and fallback."""

from __future__ import annotations

import time

import numpy as np
import pybreaker
import pytest

from jeffrey_core.contract import EKMAN_LABELS
from jeffrey_core.settings import EmotionSettings
from jeffrey_worker.emotion.detector import FALLBACK_CONFIDENCE, EmotionDetector, fallback_result
from jeffrey_worker.emotion.features import TfidfView, char_wb_ngrams, word_ngrams
from jeffrey_worker.emotion.french import FrenchLexiconModel
from jeffrey_worker.emotion.language import detect_language
from jeffrey_worker.emotion.model import EmotionResult
from jeffrey_worker.emotion_service import GuardedDetector
from tests.conftest import require

pytestmark = pytest.mark.unit
CORPUS = [
    "I can't believe it, this is AMAZING!!",
    "so   sad   today... my dog died",
    "Ugh, that's disgusting. Gross.",
    "a",
    "",
    "naïve café — über cool 😀 tabs\tand\nnewlines",
]


@pytest.fixture(scope="module")
def detector() -> EmotionDetector:
    return EmotionDetector.load()


def test_featuriser_matches_scikit_learn() -> None:
    try:
        from sklearn.feature_extraction import text as sklearn_text
    except ImportError:
        require(False, "scikit-learn is not installed (pip install -e '.[dev]')")
    for kwargs, analyzer in (
        ({"ngram_range": (1, 2)}, "word"),
        ({"analyzer": "char_wb", "ngram_range": (2, 5)}, "char_wb"),
    ):
        vectoriser = sklearn_text.TfidfVectorizer(sublinear_tf=True, dtype=np.float32, **kwargs).fit(CORPUS)
        view = TfidfView(
            analyzer, *kwargs["ngram_range"], dict(vectoriser.vocabulary_), vectoriser.idf_.astype(np.float32)
        )
        expected = vectoriser.transform(CORPUS).toarray()
        for i, text in enumerate(CORPUS):
            indices, values = view.transform_one(text)
            row = np.zeros(expected.shape[1], dtype=np.float32)
            row[indices] = values
            np.testing.assert_allclose(row, expected[i], rtol=1e-5, atol=1e-6)
    assert word_ngrams("Hello big world", 1, 2) == ["hello", "big", "world", "hello big", "big world"]
    assert char_wb_ngrams("ab", 2, 3) == [" a", "ab", "b ", " ab", "ab "]


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Je suis tellement content de te voir aujourd'hui", "fr"),
        ("J'ai perdu mon chat et ça me rend triste", "fr"),
        ("I am so happy to see you today", "en"),
        ("This is the worst day of my life", "en"),
        ("42 !!!", "und"),
    ],
)
def test_language_guess(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_english_results_are_calibrated_probabilities(detector: EmotionDetector) -> None:
    (joy, sad, plain) = detector.detect(
        [
            "Thank you so much, I love this, best day ever!",
            "My grandmother passed away and I miss her so much",
            "The meeting is at 3pm in room 4.",
        ]
    )
    assert joy.label == "joy" and sad.label == "sadness" and plain.label == "neutral"
    for result in (joy, sad, plain):
        assert set(result.scores) == set(EKMAN_LABELS) and len(result.fine_scores) == 28
        assert 0 < result.confidence < 1 and result.confidence == result.scores[result.label]
        assert (
            result.method == "tfidf-logreg"
            and result.model_version == detector.version
            and result.lang == "en"
        )
    assert sad.fine_label in {"grief", "sadness"}


def test_french_lexicon_with_negation() -> None:
    model = FrenchLexiconModel()
    happy, not_happy, scared, flat = model.predict(
        [
            "Je suis vraiment heureuse aujourd'hui",
            "Je ne suis pas content du tout",
            "J'ai eu très peur dans le noir",
            "Le bus passe à huit heures.",
        ]
    )
    assert (
        happy.label == "joy"
        and not_happy.label == "sadness"
        and scared.label == "fear"
        and flat.label == "neutral"
    )
    assert all(r.confidence <= 0.7 and r.method == "fr-lexicon" for r in (happy, not_happy, scared, flat))


def test_detector_routes_by_language(detector: EmotionDetector) -> None:
    en, fr = detector.detect(["I am furious, this is unacceptable", "Je suis furieux, c'est inadmissible"])
    assert (en.lang, en.method, en.label) == ("en", "tfidf-logreg", "anger")
    assert (fr.lang, fr.method, fr.label) == ("fr", "fr-lexicon", "anger")


def test_fallback_is_honest() -> None:
    result = fallback_result("whatever happens", "breaker_open")
    assert result.label == "neutral" and result.confidence == FALLBACK_CONFIDENCE
    assert result.method == "fallback:breaker_open" and result.model_version.startswith("fallback")


class _Flaky:
    def __init__(self) -> None:
        self.fail = True
        self.calls = 0

    def __call__(self, texts: list[str]) -> list[EmotionResult]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("model exploded")
        return [_joy() for _ in texts]


def _joy() -> EmotionResult:
    return EmotionResult(
        label="joy",
        fine_label="joy",
        confidence=0.9,
        scores={},
        fine_scores={},
        labels=["joy"],
        method="tfidf-logreg",
        model_version="v",
        lang="en",
    )


def test_breaker_opens_answers_fallback_and_recovers() -> None:
    flaky = _Flaky()
    breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=0.3)
    guarded = GuardedDetector(flaky, breaker, EmotionSettings())
    assert [guarded.detect(["x"])[0].method for _ in range(3)] == [
        "fallback:model_error",
        "fallback:model_error",
        "fallback:breaker_open",  # the third failure trips the breaker
    ]
    assert breaker.current_state == "open"
    calls = flaky.calls
    assert guarded.detect(["x"])[0].method == "fallback:breaker_open"
    assert flaky.calls == calls  # fails fast: the model is not called while open
    flaky.fail = False
    deadline = time.monotonic() + 5
    while guarded.detect(["x"])[0].method != "tfidf-logreg":
        assert time.monotonic() < deadline, "breaker never half-opened"
        time.sleep(0.05)
    assert breaker.current_state == "closed"


def test_slow_batches_count_as_failures_but_keep_their_answer() -> None:
    def slow(texts: list[str]) -> list[EmotionResult]:
        time.sleep(0.06)
        return [_joy() for _ in texts]

    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    guarded = GuardedDetector(slow, breaker, EmotionSettings(EMOTION_SLOW_SECONDS=0.05))
    assert guarded.detect(["x"])[0].method == "tfidf-logreg"
    guarded.detect(["x"])
    assert breaker.current_state == "open"
    assert guarded.detect(["x"])[0].method == "fallback:breaker_open"
