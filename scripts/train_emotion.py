#!/usr/bin/env python3
"""Train the English emotion model on GoEmotions and write the committed artefact.

    make train-emotion                      # uses ../shared/datasets/goemotions
    python scripts/train_emotion.py --data DIR --out PATH

Train split fits the vectorisers and the per-label logistic regressions (class-balanced); the dev
split fits Platt calibration and picks each label's threshold (max F1). The test split is never read
here: `make eval-emotion` reports on it. Deterministic: the same data gives the same artefact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "worker"))

from jeffrey_worker.emotion.artefact import DEFAULT_ARTEFACT, LinearHead, save_artefact  # noqa: E402
from jeffrey_worker.emotion.features import TfidfView  # noqa: E402
from jeffrey_worker.emotion.goemotions import GoEmotions  # noqa: E402

VERSION = "en-tfidf-lr-1"


def fit_label(features: sparse.csr_matrix, target: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear", max_iter=2000)
    model.fit(features, target)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def platt(logits: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Calibrate one label's logits on dev: p = sigmoid(a * logit + b)."""
    model = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000)
    model.fit(logits.reshape(-1, 1), target)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def best_threshold(probabilities: np.ndarray, target: np.ndarray) -> float:
    grid = np.arange(0.02, 0.96, 0.01)
    scores = [f1_score(target, probabilities >= t, zero_division=0) for t in grid]
    return float(grid[int(np.argmax(scores))])


def train_head(name, labels, f_train, y_train, f_dev, y_dev, c, jobs):  # type: ignore[no-untyped-def]
    fits = Parallel(n_jobs=jobs, max_nbytes=None)(
        delayed(fit_label)(f_train, np.ascontiguousarray(y_train[:, j]), c) for j in range(len(labels))
    )
    weights = np.stack([w for w, _ in fits])
    bias = np.array([b for _, b in fits])
    dev_logits = np.asarray(f_dev @ weights.T) + bias
    calib = np.array([platt(dev_logits[:, j], y_dev[:, j]) for j in range(len(labels))])
    dev_p = 1 / (1 + np.exp(-(calib[:, 0] * dev_logits + calib[:, 1])))
    thresholds = np.array([best_threshold(dev_p[:, j], y_dev[:, j]) for j in range(len(labels))])
    macro = f1_score(y_dev, dev_p >= thresholds, average="macro", zero_division=0)
    print(f"{name}: dev macro-F1 {macro:.4f} (float weights, before int8 quantisation)", file=sys.stderr)
    head = LinearHead(labels, weights.astype(np.float32), bias.astype(np.float32), calib.astype(np.float32),
                      thresholds.astype(np.float32))  # fmt: skip
    return head, macro


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "goemotions")
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTEFACT)
    parser.add_argument("--char-features", type=int, default=50_000)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    started = time.time()
    data = GoEmotions(args.data)
    train, dev = data.split("train"), data.split("dev")
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, dtype=np.float32)
    char = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=3,
        max_features=args.char_features, dtype=np.float32,
    )  # fmt: skip
    f_train = sparse.hstack([word.fit_transform(train.texts), char.fit_transform(train.texts)]).tocsr()
    f_dev = sparse.hstack([word.transform(dev.texts), char.transform(dev.texts)]).tocsr()
    print(f"features: {f_train.shape[1]} ({time.time() - started:.0f}s)", file=sys.stderr)

    fine, fine_f1 = train_head(
        "fine (28)", data.fine_labels, f_train, train.fine, f_dev, dev.fine, args.C, args.jobs
    )
    ekman, ek_f1 = train_head(
        "ekman (7)", data.ekman_labels, f_train, train.ekman, f_dev, dev.ekman, args.C, args.jobs
    )

    views = [
        TfidfView(
            "word", 1, 2, {t: int(i) for t, i in word.vocabulary_.items()}, word.idf_.astype(np.float32)
        ),
        TfidfView(
            "char_wb", 2, 5, {t: int(i) for t, i in char.vocabulary_.items()}, char.idf_.astype(np.float32)
        ),
    ]
    digest = hashlib.sha256()
    for split in ("train", "dev"):
        digest.update((args.data / f"{split}.tsv").read_bytes())
    meta = {
        "version": VERSION,
        "data_sha256_train_dev": digest.hexdigest(),
        "features": {
            "word": "1-2 grams, min_df 2",
            "char_wb": f"2-5 grams, min_df 3, top {args.char_features}",
        },
        "head": f"per-label LogisticRegression(C={args.C}, class_weight=balanced, liblinear); Platt on dev",
        "dev_macro_f1": {"fine": round(fine_f1, 4), "ekman": round(ek_f1, 4)},
    }
    save_artefact(args.out, meta, views, {"fine": fine, "ekman": ekman})
    size = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.1f} MB) in {time.time() - started:.0f}s", file=sys.stderr)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
