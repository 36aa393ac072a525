"""The committed emotion artefact reaches its quality floors on GoEmotions dev (test is for reports only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jeffrey_worker.emotion.evaluation import evaluate_goemotions, evaluate_single_label, read_labelled_tsv
from jeffrey_worker.emotion.goemotions import GoEmotions
from jeffrey_worker.emotion.model import EnglishEmotionModel
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration
DATA = Path(os.environ.get("GOEMOTIONS_DIR", ROOT.parent / "shared" / "datasets" / "goemotions"))


def test_dev_macro_f1_floors() -> None:
    if not (DATA / "dev.tsv").exists():
        pytest.skip(f"GoEmotions is not at {DATA}; the quality floor cannot be checked here")
    model = EnglishEmotionModel.load()
    report = evaluate_goemotions(model, GoEmotions(DATA).split("dev"))
    # Measured at training time on dev: 0.510 (28-way) and 0.597 (Ekman); the floors leave room for int8.
    assert report["macro_f1_fine28"] >= 0.49, report["macro_f1_fine28"]
    assert report["macro_f1_ekman7"] >= 0.58, report["macro_f1_ekman7"]
    assert report["ece_top_label_ekman"] <= 0.08


def test_french_set_is_balanced_and_better_than_chance() -> None:
    from jeffrey_worker.emotion.detector import EmotionDetector

    texts, gold = read_labelled_tsv(ROOT / "tests" / "data" / "emotion_fr_eval.tsv")
    assert len(texts) >= 70 and {gold.count(label) for label in set(gold)} == {12}
    report = evaluate_single_label(EmotionDetector.load().detect(texts), gold)
    assert report["accuracy"] >= 0.5  # chance is 1/7; measured 0.68 (see docs/emotion-model.md)
