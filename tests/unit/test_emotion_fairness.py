"""One user's input cannot slow the emotion path for everyone (issue 11, item 3).

The French lexicon matches through an index (linear in the text) and must give exactly what the
old scan of every cue at every token gave; the breaker judges slowness per input size.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import pybreaker
import pytest

from jeffrey_core.breaker import slow_threshold
from jeffrey_core.contract import EKMAN_LABELS, MAX_DETECT_TEXTS, MAX_TEXT_CHARS
from jeffrey_core.settings import EmotionSettings
from jeffrey_worker.emotion import french
from jeffrey_worker.emotion.detector import EmotionDetector
from jeffrey_worker.emotion.french import FrenchLexiconModel, fold
from jeffrey_worker.emotion.model import EKMAN_GROUPS, EmotionResult
from jeffrey_worker.emotion_service import GuardedDetector

pytestmark = pytest.mark.unit
EVAL = Path(__file__).resolve().parents[1] / "data" / "emotion_fr_eval.tsv"


def _eval_texts() -> list[str]:
    with EVAL.open(encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle, delimiter="\t")]


def _reference(text: str) -> dict[str, Any]:
    """The lexicon before the index (fr-lexicon-1 as first shipped): every cue tried at every token.

    Kept here only as the oracle of the equivalence test; O(tokens × cues)."""
    tokens = french._tokens(text)
    evidence = dict.fromkeys(EKMAN_LABELS, 0.0)
    fine_evidence: dict[str, float] = {}
    for i in range(len(tokens)):
        for cue in french._CUES:
            n = len(cue.words)
            window = tokens[i : i + n]
            if len(window) < n or not all(
                tok.startswith(w) if j == n - 1 else tok == w
                for j, (tok, w) in enumerate(zip(window, cue.words, strict=True))
            ):
                continue
            negated = any(t in french._NEGATIONS or t.startswith("n'") for t in tokens[max(0, i - 3) : i])
            label, fine = cue.label, cue.fine
            if negated and label == "joy":
                label, fine = "sadness", "disappointment"
            elif negated and label not in ("surprise",):
                continue
            evidence[label] += 1.0
            fine_evidence[fine] = fine_evidence.get(fine, 0.0) + 1.0
    evidence["neutral"] = french.NEUTRAL_PRIOR
    total = sum(evidence.values())
    scores = {k: round(min(french.MAX_CONFIDENCE, v / total), 4) for k, v in evidence.items()}
    label = max(EKMAN_LABELS, key=lambda k: (evidence[k], k == "neutral"))
    group = EKMAN_GROUPS[label]
    fine_label = max(group, key=lambda f: fine_evidence.get(f, 0.0)) if label != "neutral" else "neutral"
    fine_total = sum(fine_evidence.values()) or 1.0
    fine_scores = {f: round(v / fine_total * scores[label], 4) for f, v in fine_evidence.items()}
    return {
        "label": label,
        "fine_label": fine_label,
        "confidence": scores[label],
        "scores": scores,
        "fine_scores": fine_scores,
        "labels": [k for k in EKMAN_LABELS if evidence[k] > 0 and k != "neutral"] or ["neutral"],
    }


def _same(result: EmotionResult, expected: dict[str, Any]) -> None:
    got = result.as_dict()
    for key, value in expected.items():
        assert got[key] == value, key
    # Same order too: fine_scores is serialised as the detect answer.
    assert list(got["fine_scores"]) == list(expected["fine_scores"])


def _random_texts(count: int, seed: int) -> list[str]:
    """Cue words (whole, stems, with suffixes), idiom pieces, negations, elisions, accents and junk."""
    rnd = random.Random(seed)
    words = [w for cue in french._CUES for w in cue.words] + sorted(french._NEGATIONS)
    words += ["n'", "j'ai", "c'est", "l'", "'", "ne", "je", "suis", "très", "Écœuré", "DÉÇU", "ça"]
    words += ["hors", "de", "moi", "coeur", "brisé", "ras-le-bol", "bouche", "bée", "—", "!!", "123", "x"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rnd.randint(0, 40)):
            word = rnd.choice(words)
            if rnd.random() < 0.3:
                word += rnd.choice(["s", "e", "es", "ment", "ait", "é", "'", "’"])
            parts.append(word.upper() if rnd.random() < 0.1 else word)
        texts.append(rnd.choice([" ", "  ", ", ", "'"]).join(parts))
    return texts


def test_indexed_lexicon_gives_the_same_results_as_the_full_scan() -> None:
    model = FrenchLexiconModel()
    eval_texts = _eval_texts()
    rnd = random.Random(11)
    long_text = " ".join(rnd.choices(eval_texts, k=15))  # the oracle is slow: one long text is enough
    idioms = [" ".join(c.words) for c in french._CUES if len(c.words) > 1]
    idioms = [
        f"{lead}{idiom}{end}" for idiom in idioms for lead, end in (("", ""), ("pas ", "s"), ("x ", " x"))
    ]
    texts = eval_texts + idioms + _random_texts(80, seed=7) + [long_text, "", "'", "a", "pas"]
    for text, result in zip(texts, model.predict(texts), strict=True):
        _same(result, _reference(text))


class _CountingDict(dict[str, tuple[int, ...]]):
    """A lookup table that counts its lookups: the unit of work of the indexed lexicon."""

    lookups = 0

    def get(self, key: str, default: Any = None) -> Any:
        type(self).lookups += 1
        return super().get(key, default)


def _lookups(monkeypatch: pytest.MonkeyPatch, text: str) -> int:
    index = french.INDEX
    counting = french.CueIndex(
        cues=index.cues,
        by_stem=_CountingDict(index.by_stem),
        by_first_word=_CountingDict(index.by_first_word),
        stem_lengths=index.stem_lengths,
    )
    monkeypatch.setattr(french, "INDEX", counting)
    _CountingDict.lookups = 0
    FrenchLexiconModel().predict([text])
    return _CountingDict.lookups


def test_lexicon_work_grows_linearly_with_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    base = " ".join(_eval_texts())[:2500]
    one, two = _lookups(monkeypatch, base), _lookups(monkeypatch, base + " " + base)
    assert 1.9 <= two / one <= 2.1
    # Bounded per token by the lexicon's shape, not by its size × the text.
    tokens = len(french._tokens(base))
    assert one <= tokens * (len(french.INDEX.stem_lengths) + 1)
    assert one < tokens * len(french._CUES) / 5  # the old scan tried every cue at every token


def test_pathological_tokens_cost_no_more_than_ordinary_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    bound = len(french.INDEX.stem_lengths) + 1
    for text in ("a" * MAX_TEXT_CHARS, "n'" * 2500, "pas " * 1250, "ras le bol " * 454, "é" * 5000):
        tokens = len(french._tokens(text))
        assert _lookups(monkeypatch, text) <= max(1, tokens) * bound, text[:10]


def test_detector_reads_each_text_up_to_the_contract_limit() -> None:
    detector = EmotionDetector.load()
    text = "Je suis tellement heureuse. " * 200
    over, at_limit = detector.detect([text + "Quelle tristesse, quel chagrin. " * 400, text[:MAX_TEXT_CHARS]])
    assert over.as_dict() == at_limit.as_dict()


def _guarded(seconds_per_call: float, fail_max: int = 2) -> GuardedDetector:
    """A detector whose every call takes `seconds_per_call` on a clock the test controls."""
    now = [0.0]

    def detect_raw(texts: list[str]) -> list[EmotionResult]:
        now[0] += seconds_per_call
        return FrenchLexiconModel().predict(["Je suis contente"] * len(texts))

    breaker = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=600)
    return GuardedDetector(detect_raw, breaker, EmotionSettings(), clock=lambda: now[0])


def test_a_big_but_normal_batch_does_not_count_as_slow() -> None:
    settings = EmotionSettings()
    full = ["j" * MAX_TEXT_CHARS] * MAX_DETECT_TEXTS
    # 3 s is over the 2 s floor, but well under what 320,000 characters may take.
    assert slow_threshold(settings.slow_seconds, settings.slow_seconds_per_kchar, 320_000) > 3.0
    guarded = _guarded(3.0)
    for _ in range(5):
        assert guarded.detect(full)[0].method == "fr-lexicon"
    assert guarded.breaker.current_state == "closed"


def test_a_small_batch_that_slow_still_counts() -> None:
    guarded = _guarded(3.0)
    assert guarded.detect(["Je suis contente"])[0].method == "fr-lexicon"  # slow: the answer is kept
    guarded.detect(["Je suis contente"])
    assert guarded.breaker.current_state == "open"
    assert guarded.detect(["Je suis contente"])[0].method == "fallback:breaker_open"


def test_slow_threshold_scales_with_characters() -> None:
    assert slow_threshold(2.0, 0.01, 0) == 2.0
    assert slow_threshold(2.0, 0.01, 40_000) == pytest.approx(2.4)
    assert slow_threshold(2.0, 0.0, 10**6) == 2.0
    assert fold("Écœuré") == "ecoeure"  # the lexicon's folding, which the index relies on
