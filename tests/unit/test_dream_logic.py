"""DreamEngine logic without a database: quality, order independence, the batch-size tuner, the schedule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from jeffrey_core.schedule import next_fire_time
from jeffrey_core.settings import DreamSettings
from jeffrey_worker.dream import planner, synthetic
from jeffrey_worker.dream.tuner import BatchSizeTuner
from jeffrey_worker.dream.vectors import Embedder, content_words

pytestmark = pytest.mark.unit
EMBED = Embedder()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def items_from(texts: list[str], emotions: list[str | None] | None = None) -> list[planner.PlanItem]:
    emotions = emotions or [None] * len(texts)
    return [
        planner.PlanItem(
            f"m{i:04d}",
            t,
            T0 + timedelta(minutes=i),
            EMBED.embed(t),
            EMBED.term_weights(t),
            e,
            0.8 if e else 0.0,
        )
        for i, (t, e) in enumerate(zip(texts, emotions, strict=True))
    ]


def clustered() -> list[planner.PlanItem]:
    memories = synthetic.generate(60, themes=3, seed=21)
    return items_from([m.text for m in memories], [m.emotion for m in memories])


def partition(plan: planner.Plan) -> set[frozenset[str]]:
    return {frozenset(m.memory_id for m in d.new_members) for d in plan.created}


def test_quality_is_high_for_clear_themes() -> None:
    plan = planner.plan_batch(clustered(), [])
    assert plan.quality is not None and plan.quality >= 0.5
    assert 3 <= len(plan.created) <= 6


def test_quality_is_near_zero_for_unrelated_texts() -> None:
    for seed in (1, 2, 3):
        plan = planner.plan_batch(items_from(synthetic.random_texts(80, seed=seed)), [])
        assert plan.quality is not None and plan.quality <= 0.1


def test_quality_and_dreams_do_not_depend_on_input_order() -> None:
    items = clustered()
    reference = planner.plan_batch(list(items), [])
    for seed in range(5):
        shuffled = list(items)
        random.Random(seed).shuffle(shuffled)
        again = planner.plan_batch(shuffled, [])
        assert again.quality == reference.quality
        assert partition(again) == partition(reference)


def test_quality_is_undefined_below_three_memories() -> None:
    assert planner.plan_batch(items_from(["sea sand waves", "sea sand surf"]), []).quality is None
    assert planner.plan_batch([], []).quality is None


def test_later_batches_attach_to_existing_dreams() -> None:
    first = planner.plan_batch(items_from(["beach sea sand waves swim"] * 3), [])
    assert len(first.created) == 1
    dream = first.created[0]
    later = [
        planner.PlanItem(
            "x1",
            "sand and waves at the beach",
            T0 + timedelta(days=3),
            EMBED.embed("sand and waves at the beach"),
            EMBED.term_weights("sand and waves at the beach"),
        )
    ]
    second = planner.plan_batch(later, [dream])
    assert second.updated == [dream] and dream.member_count == 4
    assert dream.last_memory_at == T0 + timedelta(days=3)
    assert "beach" in dream.theme and 0 < dream.salience(T0 + timedelta(days=3)) <= 1


def test_stop_words_are_removed_in_both_languages() -> None:
    assert content_words("The cat and the dog were in the garden") == ["cat", "dog", "garden"]
    assert content_words("Je suis allée au marché avec mes enfants") == ["allée", "marché", "enfant"]


class FakeStore:
    def __init__(self) -> None:
        self.size: int | None = None
        self.quality: float | None = None

    def load(self) -> tuple[int | None, float | None]:
        return self.size, self.quality

    def save(self, size: int, quality_average: float | None) -> None:
        self.size, self.quality = size, quality_average


class FakeClock:
    """Batch durations come from here, not from the wall clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def measure(self, seconds: float) -> float:
        start = self.now
        self.now += seconds
        return self.now - start


def test_tuner_grows_when_fast_and_halves_on_failure() -> None:
    store, clock = FakeStore(), FakeClock()
    tuner = BatchSizeTuner(store, minimum=25, maximum=500, initial=100, target_seconds=10)
    assert tuner.current() == 100
    sizes = [tuner.record(tuner.current(), clock.measure(1.0), ok=True, quality=0.7) for _ in range(5)]
    assert sizes == sorted(sizes) and sizes[-1] > 100
    grown = tuner.current()
    assert tuner.record(grown, clock.measure(61.0), ok=False) == grown // 2
    assert store.size == grown // 2  # persisted for every worker


def test_tuner_shrinks_when_slow_and_holds_in_between() -> None:
    tuner = BatchSizeTuner(FakeStore(), minimum=25, maximum=500, initial=200, target_seconds=10)
    assert tuner.record(200, 12.0, ok=True) == 160
    assert tuner.record(160, 7.0, ok=True) == 160


def test_tuner_does_not_grow_when_quality_collapses() -> None:
    tuner = BatchSizeTuner(FakeStore(), initial=100, target_seconds=10)
    tuner.record(100, 1.0, ok=True, quality=0.8)
    size = tuner.current()
    assert tuner.record(size, 1.0, ok=True, quality=0.2) == size


def test_tuner_never_leaves_its_bounds() -> None:
    tuner = BatchSizeTuner(FakeStore(), minimum=25, maximum=500, initial=100, target_seconds=10)
    for _ in range(50):
        tuner.record(tuner.current(), 0.1, ok=True)
    assert tuner.current() == 500
    for _ in range(50):
        tuner.record(tuner.current(), 99.0, ok=False)
    assert tuner.current() == 25


def test_schedule_next_fire_and_validation() -> None:
    now = datetime(2026, 11, 26, 5, 7, tzinfo=UTC)
    assert next_fire_time("*/15 * * * *", now) == datetime(2026, 11, 26, 5, 15, tzinfo=UTC)
    assert next_fire_time("30 2 * * 1", now) == datetime(2026, 11, 30, 2, 30, tzinfo=UTC)  # a Monday
    with pytest.raises(ValidationError, match="5-field cron"):
        DreamSettings(DREAM_SCHEDULE="every 15 minutes")


def test_adjusted_rand_index() -> None:
    assert synthetic.adjusted_rand_index(list("aabb"), list("xxyy")) == 1.0
    assert synthetic.adjusted_rand_index(list("aabbcc"), list("xyzxyz")) < 0.1


def test_dreams_of_one_theme_merge_and_others_do_not() -> None:
    beach_a = planner.DreamState.from_items(items_from(["beach sea sand waves swim"] * 3))
    beach_b = planner.DreamState.from_items(items_from(["sand waves beach surf sea"] * 2))
    kitchen = planner.DreamState.from_items(items_from(["kitchen pasta garlic sauce oven"] * 4))
    for i, dream in enumerate((beach_a, beach_b, kitchen)):
        dream.id = f"d{i}"
    merges = planner.plan_merges([beach_a, beach_b, kitchen])
    assert merges == [(0, 1)]
    assert beach_a.member_count == 5 and kitchen.member_count == 4


def test_keywords_leave_out_the_words_every_dream_shares() -> None:
    def dream(terms: dict[str, float]) -> planner.DreamState:
        state = planner.DreamState.from_items(items_from(["placeholder text"]))
        state.term_weights = terms
        return state

    sea = dream({"kept": 9.0, "thinking": 9.0, "sea": 5.0, "waves": 4.0})
    work = dream({"kept": 9.0, "thinking": 9.0, "meeting": 5.0, "boss": 3.0, "sea": 1.0})
    planner.name_themes([sea, work])
    assert sea.theme == ["sea", "waves"] and work.theme == ["meeting", "boss", "sea"]
    alone = dream({"kept": 2.0, "sea": 1.0})
    planner.name_themes([alone])
    assert alone.theme == ["kept", "sea"]  # a single dream keeps its own words
