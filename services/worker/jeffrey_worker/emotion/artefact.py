"""The committed model artefact: one compressed .npz with vocabularies, idf, int8 weights, calibration."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from jeffrey_worker.emotion.features import TfidfView

ARTEFACT_DIR = Path(__file__).parent / "artefacts"
DEFAULT_ARTEFACT = ARTEFACT_DIR / "emotion-en-v1.npz"

FloatArray = npt.NDArray[np.float32]


@dataclass
class LinearHead:
    """Per-label logistic regressions with Platt calibration and decision thresholds."""

    labels: list[str]
    weights: FloatArray  # (labels, features)
    bias: FloatArray  # (labels,)
    platt: FloatArray  # (labels, 2): calibrated p = sigmoid(a * logit + b)
    thresholds: FloatArray  # (labels,) on calibrated probabilities

    def probabilities(self, indices: npt.NDArray[np.int64], values: FloatArray) -> FloatArray:
        logits = self.weights[:, indices] @ values + self.bias
        z = self.platt[:, 0] * logits + self.platt[:, 1]
        out: FloatArray = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return out


def quantise(weights: npt.NDArray[np.floating[Any]]) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """int8 weights with one scale per row (a quarter of float32's size, negligible loss)."""
    scale = np.abs(weights).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(weights / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def _encode_strings(items: list[str]) -> npt.NDArray[np.uint8]:
    return np.frombuffer("\n".join(items).encode("utf-8"), dtype=np.uint8)


def _decode_strings(array: npt.NDArray[np.uint8]) -> list[str]:
    return bytes(array).decode("utf-8").split("\n")


def save_artefact(
    path: Path, meta: dict[str, Any], views: list[TfidfView], heads: dict[str, LinearHead]
) -> None:
    arrays: dict[str, Any] = {"meta": _encode_strings([json.dumps(meta, sort_keys=True)])}
    for i, view in enumerate(views):
        terms = sorted(view.vocabulary, key=view.vocabulary.__getitem__)
        arrays[f"view{i}_vocab"] = _encode_strings(terms)
        arrays[f"view{i}_idf"] = view.idf.astype(np.float32)
        arrays[f"view{i}_spec"] = np.array([ord(view.analyzer[0]), view.min_n, view.max_n], dtype=np.int32)
    for name, head in heads.items():
        q, scale = quantise(head.weights)
        arrays[f"{name}_w"] = q
        arrays[f"{name}_scale"] = scale
        arrays[f"{name}_b"] = head.bias.astype(np.float32)
        arrays[f"{name}_platt"] = head.platt.astype(np.float32)
        arrays[f"{name}_thresholds"] = head.thresholds.astype(np.float32)
        arrays[f"{name}_labels"] = _encode_strings(head.labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_artefact(path: Path) -> tuple[dict[str, Any], list[TfidfView], dict[str, LinearHead]]:
    with np.load(path) as data:
        meta: dict[str, Any] = json.loads(_decode_strings(data["meta"])[0])
        views: list[TfidfView] = []
        offset = 0
        i = 0
        while f"view{i}_vocab" in data:
            terms = _decode_strings(data[f"view{i}_vocab"])
            kind, min_n, max_n = (int(x) for x in data[f"view{i}_spec"])
            analyzer = "word" if chr(kind) == "w" else "char_wb"
            vocab = {term: j for j, term in enumerate(terms)}
            views.append(TfidfView(analyzer, min_n, max_n, vocab, data[f"view{i}_idf"], offset))
            offset += len(terms)
            i += 1
        heads = {}
        for name in ("fine", "ekman"):
            weights = data[f"{name}_w"].astype(np.float32) * data[f"{name}_scale"][:, None]
            heads[name] = LinearHead(
                labels=_decode_strings(data[f"{name}_labels"]),
                weights=np.ascontiguousarray(weights),
                bias=data[f"{name}_b"],
                platt=data[f"{name}_platt"],
                thresholds=data[f"{name}_thresholds"],
            )
    return meta, views, heads
