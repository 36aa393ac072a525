"""Memory vectors for clustering: signed feature hashing of IDF-weighted content words, 1024 dimensions.

Chosen over plain TF-IDF cosine and character n-grams by the adjusted Rand index on the dream
benchmark (docs/dream-engine.md). No fitted artefact is needed beyond an IDF table (taken from the
emotion model's word vocabulary when available), so vectors of different runs are comparable and
can be stored on the memory (`embedding`, float32 bytes). Hashing uses crc32: stable across
processes, unlike Python's salted `hash`.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

MODEL_NAME = "hash1024-idf-1"
DIM = 1024
DEFAULT_IDF = 8.0
_WORD = re.compile(r"[^\W\d_]{2,}")

STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she should
    so some such than that the their theirs them themselves then there these they this those through to
    too under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves im ive id dont didnt cant wont isnt its thats really got get getting went go
    going today yesterday day just also still much one lot things thing like
    au aux avec ce ces cette dans de des du elle elles en est et eu il ils je la le les leur lui ma mais
    me mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton tu
    un une vos votre vous ai as avons avez ont était étais été être avoir fait faire suis es sommes sont
    très trop bien aussi encore tout tous toute toutes plus rien jamais ça cela cet ici là quand comme
    aujourd hui hier demain chez sans vraiment beaucoup peu déjà puis alors donc car si""".split()
)


def _fold(token: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", token) if unicodedata.category(c) != "Mn")


def content_words(text: str) -> list[str]:
    """Lowercased words of 2+ letters, stop words (English and French) removed, plural 's' trimmed."""
    words = []
    for word in _WORD.findall(text.lower().replace("’", "'")):
        if word in STOP_WORDS or _fold(word) in STOP_WORDS:
            continue
        if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
            word = word[:-1]
        words.append(word)
    return words


def _bucket(word: str) -> tuple[int, float]:
    digest = zlib.crc32(word.encode("utf-8"))
    return digest % DIM, 1.0 if (digest >> 16) & 1 else -1.0


class Embedder:
    """Text → unit vector (float32, DIM) and weighted terms for theme keywords."""

    model_name = MODEL_NAME

    def __init__(self, idf: Mapping[str, float] | None = None) -> None:
        self.idf = idf or {}

    def weight(self, word: str) -> float:
        return float(self.idf.get(word, DEFAULT_IDF))

    def term_weights(self, text: str) -> dict[str, float]:
        counts = Counter(content_words(text))
        return {w: (1.0 + math.log(c)) * self.weight(w) for w, c in counts.items()}

    def embed(self, text: str) -> npt.NDArray[np.float32]:
        vector = np.zeros(DIM, dtype=np.float32)
        for word, weight in self.term_weights(text).items():
            index, sign = _bucket(word)
            vector[index] += sign * weight
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def embed_many(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """(len(texts), DIM) unit vectors."""
        if not texts:
            return np.zeros((0, DIM), np.float32)
        return np.stack([self.embed(t) for t in texts]).astype(np.float32)


def to_bytes(vector: npt.NDArray[np.float32]) -> bytes:
    return vector.astype(np.float32).tobytes()


def from_bytes(blob: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(blob, dtype=np.float32).copy()


def idf_from_emotion_model() -> dict[str, float]:
    """Unigram IDF of the emotion model's word vocabulary (GoEmotions), or {} when it cannot load."""
    try:
        from jeffrey_worker.emotion.artefact import DEFAULT_ARTEFACT, load_artefact

        _, views, _ = load_artefact(DEFAULT_ARTEFACT)
    except (OSError, KeyError, ValueError):
        return {}
    word = next(v for v in views if v.analyzer == "word")
    return {term: float(word.idf[i]) for term, i in word.vocabulary.items() if " " not in term}
