"""TF-IDF featurisation, byte-for-byte the same as scikit-learn's TfidfVectorizer, in plain Python + NumPy.

Training uses scikit-learn; inference needs only this module, so workers do not carry scikit-learn
or SciPy. `tests/unit/test_emotion_logic.py` checks the equivalence against scikit-learn.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_WHITE_SPACES = re.compile(r"\s\s+")

SparseRow = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def word_ngrams(text: str, min_n: int, max_n: int) -> list[str]:
    """sklearn's `analyzer='word'` with lowercase and the default token pattern."""
    tokens = _TOKEN.findall(text.lower())
    if max_n == 1:
        return tokens
    original = tokens
    grams = list(original) if min_n == 1 else []
    for n in range(max(min_n, 2), min(max_n + 1, len(original) + 1)):
        grams.extend(" ".join(original[i : i + n]) for i in range(len(original) - n + 1))
    return grams


def char_wb_ngrams(text: str, min_n: int, max_n: int) -> list[str]:
    """sklearn's `analyzer='char_wb'`: character n-grams inside space-padded words."""
    grams: list[str] = []
    for word in _WHITE_SPACES.sub(" ", text.lower()).split():
        padded = f" {word} "
        length = len(padded)
        for n in range(min_n, max_n + 1):
            offset = 0
            grams.append(padded[offset : offset + n])
            while offset + n < length:
                offset += 1
                grams.append(padded[offset : offset + n])
            if offset == 0:  # the word is shorter than n: counted once
                break
    return grams


@dataclass
class TfidfView:
    """One vectoriser: analyzer, n-gram range, vocabulary and idf (sublinear tf, l2 norm)."""

    analyzer: str
    min_n: int
    max_n: int
    vocabulary: dict[str, int]
    idf: npt.NDArray[np.float32]
    offset: int = 0  # position of this view's first column in the stacked feature space

    def analyse(self, text: str) -> list[str]:
        if self.analyzer == "word":
            return word_ngrams(text, self.min_n, self.max_n)
        return char_wb_ngrams(text, self.min_n, self.max_n)

    def transform_one(self, text: str) -> SparseRow:
        counts = Counter(idx for gram in self.analyse(text) if (idx := self.vocabulary.get(gram)) is not None)
        if not counts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        indices = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter((1.0 + math.log(c) for c in counts.values()), dtype=np.float32, count=len(counts))
        values = tf * self.idf[indices]
        norm = float(np.sqrt(np.dot(values, values)))
        if norm > 0:
            values /= norm
        return indices + self.offset, values


def stack_rows(views: list[TfidfView], text: str) -> SparseRow:
    """The concatenated (hstack) feature row of `text` over all views."""
    parts = [view.transform_one(text) for view in views]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
