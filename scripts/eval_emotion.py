#!/usr/bin/env python3
"""Evaluate the committed emotion model: GoEmotions test (28-way and Ekman 7), the French set, speed, memory.

make eval-emotion        # prints a report and writes docs/emotion-eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "worker"))

from jeffrey_worker.emotion.artefact import DEFAULT_ARTEFACT  # noqa: E402
from jeffrey_worker.emotion.detector import EmotionDetector  # noqa: E402
from jeffrey_worker.emotion.evaluation import (  # noqa: E402
    evaluate_goemotions,
    evaluate_single_label,
    max_rss_mb,
    read_labelled_tsv,
    throughput,
)
from jeffrey_worker.emotion.goemotions import GoEmotions  # noqa: E402

FRENCH_SET = ROOT / "tests" / "data" / "emotion_fr_eval.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "goemotions")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "emotion-eval.json")
    args = parser.parse_args()

    rss_before = max_rss_mb()
    started = time.perf_counter()
    detector = EmotionDetector.load(DEFAULT_ARTEFACT)
    load_seconds = time.perf_counter() - started
    split = GoEmotions(args.data).split(args.split)
    report = {
        "model_version": detector.version,
        "artefact_mb": round(DEFAULT_ARTEFACT.stat().st_size / 1e6, 2),
        "load_seconds": round(load_seconds, 3),
        f"goemotions_{args.split}": evaluate_goemotions(detector.english, split),
    }
    texts = split.texts[:2000]
    report["texts_per_second"] = {
        "single": round(throughput(detector.detect, texts[:500], 1), 1),
        "batch_64": round(throughput(detector.detect, texts, 64), 1),
    }
    fr_texts, fr_gold = read_labelled_tsv(FRENCH_SET)
    report["french_set"] = evaluate_single_label(detector.detect(fr_texts), fr_gold)
    report["french_set"]["detected_as_french"] = sum(r.lang == "fr" for r in detector.detect(fr_texts))
    report["rss_mb"] = {"before_load": round(rss_before, 1), "after_eval": round(max_rss_mb(), 1)}

    g = report[f"goemotions_{args.split}"]
    print(f"model {report['model_version']}  artefact {report['artefact_mb']} MB  load {load_seconds:.2f}s")
    print(f"GoEmotions {args.split} (n={g['n']}): macro-F1 28-way {g['macro_f1_fine28']}  Ekman-7 {g['macro_f1_ekman7']}"
          f"  (paper BERT-base: 0.46 / 0.64)")  # fmt: skip
    print(f"  Ekman top-label accuracy {g['top_label_accuracy_ekman']}  ECE {g['ece_top_label_ekman']}")
    print("  per-label F1 (Ekman):", json.dumps(g["per_label_f1_ekman7"]))
    print("  per-label F1 (28):", json.dumps(g["per_label_f1_fine28"]))
    fr = report["french_set"]
    print(f"French set (n={fr['n']}): accuracy {fr['accuracy']}  macro-F1 {fr['macro_f1_ekman7']}  ECE {fr['ece']}"
          f"  detected as French {fr['detected_as_french']}/{fr['n']}")  # fmt: skip
    print("  per-label F1:", json.dumps(fr["per_label_f1"]))
    tps = report["texts_per_second"]
    print(f"throughput: {tps['single']} texts/s one by one, {tps['batch_64']} texts/s in batches of 64")
    print(
        f"max RSS: {report['rss_mb']['after_eval']} MB (interpreter + NumPy before load: {rss_before:.0f} MB)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
