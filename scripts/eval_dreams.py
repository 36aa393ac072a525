#!/usr/bin/env python3
"""Dream grouping on real text: `make eval-dreams` writes docs/dream-eval.json.

Every case stores texts for one user and drives a real run through `consolidate_one_batch` (the
function the Celery task calls) against a throwaway redis-server and SQLite, then compares the
dreams with the known groups (adjusted Rand index and NMI; a memory in no dream is its own cluster):

- Banking77 test (3,080 real queries, 77 intents) — never used for tuning (thresholds: train);
- the templated-frame case: 200 memories, 5 themes, one sentence frame shared by all;
- the synthetic benchmark (1,000 memories, 8 themes, 5 % noise);
- French and English diaries (72 each, 8 themes; written blind by a separate helper, tests/data),
  and one user who wrote both (144 memories, 16 themes: a French and an English dream per theme);
- a harder French diary (80 memories, 8 abstract themes such as money, friends, studies, with shared
  sentence openings; written by another helper as a tuning set, tests/data);
- a second French tuning diary (80 memories, 8 concrete themes such as hiking, DIY, the car, pets;
  written by a third helper, who never saw the other sets, to try methods on without touching the
  blind diary);
- random unrelated text: the run quality must stay near 0;
- whether the run quality score ranks clusterings as ARI does (Spearman over perturbed clusterings
  of a Banking77 test sample).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "services" / "worker")]

from scipy.stats import spearmanr  # noqa: E402
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # noqa: E402

from jeffrey_dev.dream_harness import consolidate_user, private_redis, worker_context  # noqa: E402
from jeffrey_worker.dream import clustering, synthetic  # noqa: E402

BANKING = ROOT.parent / "shared" / "datasets" / "banking77"
FRAME_THEMES = {
    "sea": "the sea, the waves and the beach",
    "work": "the meeting, my boss and the deadline",
    "cooking": "the soup, the oven and the recipe",
    "health": "the doctor, my back pain and the pills",
    "music": "the choir, the piano and the concert",
}


def read_tsv(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [r["text"] for r in rows], [r["theme"] for r in rows]


def read_banking(split: str, limit_intents: int | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    with (BANKING / f"{split}.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if limit_intents:
        intents = sorted({r["category"] for r in rows})
        keep = set(random.Random(seed).sample(intents, limit_intents))
        rows = [r for r in rows if r["category"] in keep]
    random.Random(seed).shuffle(rows)  # a person's memories arrive in no particular order
    return [r["text"] for r in rows], [r["category"] for r in rows]


def templated_frame(n: int = 200, seed: int = 3) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    themes = sorted(FRAME_THEMES)
    labels = [themes[i % len(themes)] for i in range(n)]
    rng.shuffle(labels)
    texts = [f"Day {i + 1}: I kept thinking about {FRAME_THEMES[t]}, again." for i, t in enumerate(labels)]
    return texts, labels


def interleave(
    french: tuple[list[str], list[str]], english: tuple[list[str], list[str]]
) -> tuple[list[str], list[str]]:
    """One person writing in both languages: a theme in French and in English are two dreams (the
    spaces are separate by design), so the truth labels keep the language."""
    texts = [t for pair in zip(french[0], english[0], strict=True) for t in pair]
    labels = [
        t
        for pair in zip([f"fr-{x}" for x in french[1]], [f"en-{x}" for x in english[1]], strict=True)
        for t in pair
    ]
    return texts, labels


def score(ctx: Any, name: str, texts: list[str], truth: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    result = consolidate_user(ctx, f"eval-{name}", texts)
    seconds = time.perf_counter() - started
    predicted = result.labels()
    sizes = [d.member_count for d in result.dreams]
    return {
        "case": name,
        "memories": len(texts),
        "groups": len(set(truth)),
        "ari": round(float(adjusted_rand_score(truth, predicted)), 4),
        "nmi": round(float(normalized_mutual_info_score(truth, predicted)), 4),
        "dreams": len(result.dreams),
        "largest_dream": max(sizes, default=0),
        "singletons": sum(1 for d in result.dream_of if d is None),
        "quality": result.quality,
        "texts_per_second": round(len(texts) / seconds, 1),
        "example_themes": [d.theme for d in sorted(result.dreams, key=lambda d: -d.member_count)[:5]],
    }


def quality_rank_check(ctx: Any, texts: list[str], truth: list[str], seed: int = 5) -> dict[str, Any]:
    """Spearman between the run quality score and ARI over perturbed versions of the true grouping."""
    vectors = ctx.embedder.embed_many(texts)
    rng = random.Random(seed)
    base = {label: i for i, label in enumerate(sorted(set(truth)))}
    true_ids = [base[t] for t in truth]
    aris, qualities = [], []
    for kind in ("merge", "split", "shuffle"):
        for severity in (0.0, 0.1, 0.2, 0.35, 0.5, 0.7):
            ids = perturb(true_ids, kind, severity, rng)
            groups: dict[int, list[int]] = {}
            for i, c in enumerate(ids):
                groups.setdefault(c, []).append(i)
            members = [g for g in groups.values() if len(g) >= 2]
            quality = clustering.quality(vectors, members, [None] * len(ids))
            aris.append(float(adjusted_rand_score(true_ids, ids)))
            qualities.append(float(quality or 0.0))
    rho = spearmanr(qualities, aris).statistic
    return {"points": len(aris), "spearman_quality_vs_ari": round(float(rho), 4)}


def perturb(ids: list[int], kind: str, severity: float, rng: random.Random) -> list[int]:
    out = list(ids)
    clusters = sorted(set(out))
    top = max(clusters) + 1
    if kind == "merge":  # merge a share of the clusters pairwise
        picked = rng.sample(clusters, int(len(clusters) * severity) // 2 * 2)
        mapping = {b: a for a, b in zip(picked[::2], picked[1::2], strict=True)}
        return [mapping.get(c, c) for c in out]
    if kind == "split":  # split a share of the clusters in two at random
        for c in rng.sample(clusters, int(len(clusters) * severity)):
            for i, x in enumerate(out):
                if x == c and rng.random() < 0.5:
                    out[i] = top + c
        return out
    for i in range(len(out)):  # shuffle: move a share of members to a random cluster
        if rng.random() < severity:
            out[i] = rng.choice(clusters)
    return out


def random_words(n: int = 300, seed: int = 11) -> list[str]:
    """Unrelated sentences of real English words (8 drawn at random from the emotion model's vocabulary)."""
    from jeffrey_worker.dream.vectors import idf_from_emotion_model

    words = sorted(w for w in idf_from_emotion_model() if w.isalpha() and len(w) > 3)
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, 8)).capitalize() + "." for _ in range(n)]


def random_quality(ctx: Any) -> list[dict[str, Any]]:
    out = []
    for name, texts in (("random syllables", synthetic.random_texts(300)), ("random words", random_words())):
        result = consolidate_user(ctx, f"eval-{name.replace(' ', '-')}", texts)
        covered = sum(1 for d in result.dream_of if d)
        out.append(
            {
                "case": name,
                "memories": 300,
                "dreams": len(result.dreams),
                "in_dreams": covered,
                "quality": result.quality,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dream-eval.json")
    parser.add_argument("--quick", action="store_true", help="Banking77 test on 20 intents only")
    args = parser.parse_args()
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, private_redis() as redis_url:
        ctx = worker_context(redis_url, f"sqlite:///{tmp}/eval.db")
        banking = read_banking("test", 20 if args.quick else None)
        inputs = {
            "banking77-test": banking,
            "templated-frame": templated_frame(),
            "french-diary": read_tsv(ROOT / "tests" / "data" / "dreams_fr_diary.tsv"),
            "english-diary": read_tsv(ROOT / "tests" / "data" / "dreams_en_diary.tsv"),
            "french-diary-abstract": read_tsv(ROOT / "tests" / "data" / "dreams_fr_diary_abstract.tsv"),
            "french-diary-tuning": read_tsv(ROOT / "tests" / "data" / "dreams_fr_diary_tuning.tsv"),
        }
        inputs["bilingual-diary"] = interleave(inputs["french-diary"], inputs["english-diary"])
        synth = synthetic.generate(1000, themes=8, seed=7, noise=0.05)
        inputs["synthetic-1000"] = (
            [m.text for m in synth],
            [m.theme if m.theme != "noise" else f"noise-{i}" for i, m in enumerate(synth)],
        )
        for name, (texts, truth) in inputs.items():
            cases.append(score(ctx, name, texts, truth))
            print(json.dumps({k: v for k, v in cases[-1].items() if k != "example_themes"}), flush=True)
        for case in random_quality(ctx):
            cases.append(case)
            print(json.dumps(case), flush=True)
        sample = read_banking("test", 30, seed=1)
        ranking = quality_rank_check(ctx, *[list(x[:1500]) for x in sample])
        print(json.dumps(ranking), flush=True)
        report = {
            "encoder": ctx.embedder.model_name,
            "thresholds": vars(ctx.embedder.thresholds),
            # French texts get their own space (encoder.RoutedEncoder); each space its thresholds.
            "spaces": {name: vars(space.thresholds) for name, space in ctx.embedder.spaces.items()},
            "cases": cases,
            "quality_ranking": ranking,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
