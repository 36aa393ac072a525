"""Evaluation helpers (NumPy only): macro-F1 with the model's own thresholds, ECE, throughput."""

from __future__ import annotations

import csv
import itertools
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from jeffrey_core.contract import EKMAN_LABELS
from jeffrey_worker.emotion.goemotions import Split
from jeffrey_worker.emotion.model import EmotionResult, EnglishEmotionModel


def f1_per_label(truth: npt.NDArray[np.int8], predicted: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    tp = (truth.astype(bool) & predicted).sum(0)
    fp = (~truth.astype(bool) & predicted).sum(0)
    fn = (truth.astype(bool) & ~predicted).sum(0)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def expected_calibration_error(
    confidence: npt.NDArray[np.float64], correct: npt.NDArray[np.bool_], bins: int = 10
) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by size."""
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        mask = (confidence > low) & (confidence <= high)
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def evaluate_goemotions(model: EnglishEmotionModel, split: Split) -> dict[str, Any]:
    fine_p = np.zeros(split.fine.shape)
    ekman_p = np.zeros(split.ekman.shape)
    for i, text in enumerate(split.texts):
        fine_p[i], ekman_p[i] = model.probabilities(text)
    fine_f1 = f1_per_label(split.fine, fine_p >= model.fine.thresholds)
    ekman_f1 = f1_per_label(split.ekman, ekman_p >= model.ekman.thresholds)
    top = ekman_p.argmax(1)
    correct = split.ekman[np.arange(len(top)), top].astype(bool)
    return {
        "n": len(split.texts),
        "macro_f1_fine28": round(float(fine_f1.mean()), 4),
        "macro_f1_ekman7": round(float(ekman_f1.mean()), 4),
        "per_label_f1_fine28": {
            k: round(float(v), 3) for k, v in zip(model.fine.labels, fine_f1, strict=True)
        },
        "per_label_f1_ekman7": {
            k: round(float(v), 3) for k, v in zip(model.ekman.labels, ekman_f1, strict=True)
        },
        "top_label_accuracy_ekman": round(float(correct.mean()), 4),
        "ece_top_label_ekman": round(
            expected_calibration_error(ekman_p[np.arange(len(top)), top], correct), 4
        ),
    }


def read_labelled_tsv(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def evaluate_single_label(results: list[EmotionResult], gold: list[str]) -> dict[str, Any]:
    predicted = [r.label for r in results]
    accuracy = float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))
    per_label = {}
    for label in EKMAN_LABELS:
        tp = sum(p == g == label for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == label != g for p, g in zip(predicted, gold, strict=True))
        fn = sum(g == label != p for p, g in zip(predicted, gold, strict=True))
        per_label[label] = round(2 * tp / (2 * tp + fp + fn), 3) if tp + fp + fn else 0.0
    confidence = np.array([r.confidence for r in results])
    correct = np.array([p == g for p, g in zip(predicted, gold, strict=True)])
    return {
        "n": len(gold),
        "accuracy": round(accuracy, 4),
        "macro_f1_ekman7": round(float(np.mean(list(per_label.values()))), 4),
        "per_label_f1": per_label,
        "mean_confidence": round(float(confidence.mean()), 4),
        "ece": round(expected_calibration_error(confidence, correct), 4),
    }


def throughput(predict: Any, texts: list[str], batch: int) -> float:
    """Texts per second, predicting `batch` texts per call."""
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        predict(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
