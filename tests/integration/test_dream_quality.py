"""Floors for dream grouping on real text, through the real consolidation service (Redis + SQLite).

A subset of what `make eval-dreams` measures (docs/dream-eval.json), so a regression fails CI:
Banking77 test on 20 intents, the templated-frame case, the English diary written blind, the
synthetic themes, and random words (which must not look like themes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import adjusted_rand_score

from jeffrey_dev.dream_harness import consolidate_user, worker_context
from jeffrey_worker.dream import synthetic
from jeffrey_worker.dream.encoder import MINILM_NAME
from tests.conftest import require
from tests.support.processes import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import eval_dreams

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def ctx(redis_url: str, sqlite_url: str) -> Any:
    context = worker_context(redis_url, sqlite_url)
    require(context.embedder.model_name == MINILM_NAME, "the MiniLM encoder is not installed")
    return context


def _ari(ctx: Any, name: str, texts: list[str], truth: list[str]) -> tuple[float, int]:
    result = consolidate_user(ctx, name, texts)
    return float(adjusted_rand_score(truth, result.labels())), len(result.dreams)


def test_banking77_subset_is_grouped_by_intent(ctx: Any) -> None:
    require(eval_dreams.BANKING.is_dir(), f"Banking77 not found at {eval_dreams.BANKING}")
    texts, truth = eval_dreams.read_banking("test", 20)
    ari, _ = _ari(ctx, "b77", texts, truth)
    assert ari >= 0.5, f"Banking77 (20 intents) ARI {ari:.3f} fell under the floor"


def test_one_sentence_frame_shared_by_every_memory_does_not_merge_the_themes(ctx: Any) -> None:
    texts, truth = eval_dreams.templated_frame()
    ari, dreams = _ari(ctx, "frame", texts, truth)
    assert 4 <= dreams <= 6 and ari >= 0.9, (dreams, ari)


def test_a_diary_written_blind_is_grouped_the_way_a_person_would(ctx: Any) -> None:
    texts, truth = eval_dreams.read_tsv(Path(ROOT / "tests" / "data" / "dreams_en_diary.tsv"))
    ari, dreams = _ari(ctx, "diary", texts, truth)
    assert ari >= 0.55 and dreams >= 5, (ari, dreams)


def test_synthetic_themes_and_random_words(ctx: Any) -> None:
    memories = synthetic.generate(300, themes=6, seed=3)
    ari, _ = _ari(ctx, "synthetic", [m.text for m in memories], [m.theme for m in memories])
    assert ari >= 0.85
    random = consolidate_user(ctx, "random", eval_dreams.random_words(200))
    assert (random.quality or 0.0) <= 0.1, random.quality
