"""Seeded generator of memories from known themes, for the dream benchmark and tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

THEMES: dict[str, tuple[str, list[str]]] = {
    "beach": (
        "joy",
        "sea sand waves swim sunscreen seashells towel surf seagulls tide lighthouse beach shore".split(),
    ),
    "work": (
        "anger",
        "boss meeting deadline office colleague report promotion salary email project overtime".split(),
    ),
    "hospital": (
        "fear",
        "doctor hospital surgery nurse scan diagnosis appointment pain medicine waiting room".split(),
    ),
    "cooking": (
        "joy",
        "recipe oven dinner pasta sauce garlic bread baking kitchen dessert soup onions".split(),
    ),
    "grief": (
        "sadness",
        "funeral grandfather cemetery flowers mourning loss memories candle goodbye church".split(),
    ),
    "garden": (
        "joy",
        "tomatoes garden seeds watering roses soil compost harvest shovel greenhouse bees".split(),
    ),
    "commute": (
        "anger",
        "train delay traffic bus subway platform ticket crowded strike station late".split(),
    ),
    "music": ("joy", "guitar concert song piano band rehearsal lyrics drums melody choir stage".split()),
    "exam": ("fear", "exam studying revision grades teacher test notes library professor thesis".split()),
    "moving": (
        "surprise",
        "boxes apartment moving keys landlord furniture neighbors truck lease painting".split(),
    ),
}
FILLER = "i we my the a with after before then again finally this that our".split()
OPENERS = ["Today", "This morning", "Last night", "Again", "Finally", "Yesterday evening", "At noon"]


@dataclass
class SyntheticMemory:
    text: str
    theme: str
    emotion: str
    created_at: datetime


def generate(n: int, themes: int = 8, seed: int = 7, noise: float = 0.0) -> list[SyntheticMemory]:
    """`n` memories spread over `themes` themes; a share `noise` of random-word memories has theme 'noise'."""
    rng = random.Random(seed)
    names = sorted(THEMES)[:themes]
    vocabulary = sorted({w for _, words in THEMES.values() for w in words})
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        created = start + timedelta(minutes=17 * i + rng.randint(0, 16))
        if rng.random() < noise:
            words = rng.sample(vocabulary, 4)
            out.append(
                SyntheticMemory(f"{rng.choice(OPENERS)} {' '.join(words)}.", "noise", "neutral", created)
            )
            continue
        theme = rng.choice(names)
        emotion, words = THEMES[theme]
        picked = rng.sample(words, rng.randint(3, 5))
        filler = rng.sample(FILLER, 2)
        parts = [*picked, *filler]
        rng.shuffle(parts)
        out.append(SyntheticMemory(f"{rng.choice(OPENERS)} {' '.join(parts)}.", theme, emotion, created))
    return out


def random_texts(n: int, seed: int = 11) -> list[str]:
    """Unrelated texts: each draws its words from a large pool, so they share almost nothing."""
    rng = random.Random(seed)
    pool = [
        "".join(rng.choice("bcdfghjklmnpqrstvwz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
        for _ in range(5000)
    ]
    return [" ".join(rng.sample(pool, 6)) for _ in range(n)]


def adjusted_rand_index(truth: list[str], predicted: list[str]) -> float:
    """ARI of two labellings (pure Python, exact)."""
    from collections import Counter
    from math import comb

    pairs = Counter(zip(truth, predicted, strict=True))
    sum_cells = sum(comb(c, 2) for c in pairs.values())
    sum_truth = sum(comb(c, 2) for c in Counter(truth).values())
    sum_pred = sum(comb(c, 2) for c in Counter(predicted).values())
    total = comb(len(truth), 2)
    if total == 0:
        return 1.0
    expected = sum_truth * sum_pred / total
    maximum = (sum_truth + sum_pred) / 2
    return 1.0 if maximum == expected else (sum_cells - expected) / (maximum - expected)
