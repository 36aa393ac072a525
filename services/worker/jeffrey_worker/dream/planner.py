"""Plan one consolidation batch: which memories join which dream, which form new dreams. No I/O.

The engine loads the batch and the user's dreams, asks for a plan, and writes it in one
transaction. Keeping this pure makes quality, order independence and dream construction testable
without a database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from jeffrey_worker.dream import clustering

ALGORITHM_VERSION = "dream-avglink-2"
DEFAULT_ATTACH = 0.25  # the lexical fallback's values (encoder.LEXICAL_THRESHOLDS)
DEFAULT_MERGE = 0.5
MEAN_MIN_POINTS = 20
THEME_SIZE = 5
TERMS_KEPT = 50


@dataclass
class PlanItem:
    memory_id: str
    text: str
    created_at: datetime
    vector: npt.NDArray[np.float32]
    terms: dict[str, float]
    emotion_label: str | None = None
    emotion_confidence: float = 0.0
    revisit: bool = False  # an earlier singleton, already consolidated, that may now join a dream


@dataclass
class DreamState:
    """What the planner needs of an existing dream (and what it hands back updated)."""

    id: str | None
    centroid_sum: npt.NDArray[np.float32]  # unnormalised sum of member vectors
    member_count: int
    term_weights: dict[str, float]
    emotion_weights: dict[str, float]
    summary: str
    summary_memory_id: str
    summary_vector: npt.NDArray[np.float32]
    first_memory_at: datetime
    last_memory_at: datetime
    new_members: list[PlanItem] = field(default_factory=list)

    @property
    def centroid(self) -> npt.NDArray[np.float32]:
        norm = float(np.linalg.norm(self.centroid_sum))
        out: npt.NDArray[np.float32] = self.centroid_sum / norm if norm > 0 else self.centroid_sum
        return out

    keywords: list[str] | None = None  # set by `name_themes`: distinctive against the user's other dreams

    @property
    def theme(self) -> list[str]:
        if self.keywords is not None:
            return self.keywords
        return [t for t, _ in sorted(self.term_weights.items(), key=lambda kv: (-kv[1], kv[0]))[:THEME_SIZE]]

    @property
    def dominant_emotion(self) -> str | None:
        weights = {k: v for k, v in self.emotion_weights.items() if v > 0}
        return max(sorted(weights), key=lambda k: weights[k]) if weights else None

    def salience(self, now: datetime) -> float:
        """Grows with size, emotional intensity and recency; in [0, 1]."""
        size = 1.0 - math.exp(-self.member_count / 8.0)
        intensity = sum(v for k, v in self.emotion_weights.items() if k != "neutral") / max(
            self.member_count, 1
        )
        age_days = max(0.0, (now - self.last_memory_at).total_seconds() / 86400)
        recency = math.exp(-age_days / 30.0)
        return round(size * (0.5 + 0.5 * min(1.0, intensity)) * (0.5 + 0.5 * recency), 4)

    def absorb(self, items: list[PlanItem]) -> None:
        """Add members: centroid, terms, emotions, time span and medoid summary move with them."""
        for item in items:
            self.centroid_sum = self.centroid_sum + item.vector
            self.member_count += 1
            for term, weight in item.terms.items():
                self.term_weights[term] = self.term_weights.get(term, 0.0) + weight
            if item.emotion_label:
                label = item.emotion_label
                self.emotion_weights[label] = self.emotion_weights.get(label, 0.0) + item.emotion_confidence
            self.first_memory_at = min(self.first_memory_at, item.created_at)
            self.last_memory_at = max(self.last_memory_at, item.created_at)
            self.new_members.append(item)
        kept = sorted(self.term_weights.items(), key=lambda kv: (-kv[1], kv[0]))[:TERMS_KEPT]
        self.term_weights = {k: round(v, 4) for k, v in kept}
        centroid = self.centroid
        best = max(items, key=lambda i: (float(i.vector @ centroid), i.memory_id))
        if float(best.vector @ centroid) > float(self.summary_vector @ centroid):
            self.summary, self.summary_memory_id, self.summary_vector = best.text, best.memory_id, best.vector

    def merge(self, other: DreamState) -> None:
        """Absorb another dream of the same theme (its members move here)."""
        self.centroid_sum = self.centroid_sum + other.centroid_sum
        self.member_count += other.member_count
        for term, weight in other.term_weights.items():
            self.term_weights[term] = self.term_weights.get(term, 0.0) + weight
        kept = sorted(self.term_weights.items(), key=lambda kv: (-kv[1], kv[0]))[:TERMS_KEPT]
        self.term_weights = {k: round(v, 4) for k, v in kept}
        for label, weight in other.emotion_weights.items():
            self.emotion_weights[label] = self.emotion_weights.get(label, 0.0) + weight
        self.first_memory_at = min(self.first_memory_at, other.first_memory_at)
        self.last_memory_at = max(self.last_memory_at, other.last_memory_at)
        centroid = self.centroid
        if float(other.summary_vector @ centroid) > float(self.summary_vector @ centroid):
            self.summary, self.summary_memory_id = other.summary, other.summary_memory_id
            self.summary_vector = other.summary_vector

    @classmethod
    def from_items(cls, items: list[PlanItem]) -> DreamState:
        first = items[0]
        state = cls(
            id=None,
            centroid_sum=np.zeros_like(first.vector),
            member_count=0,
            term_weights={},
            emotion_weights={},
            summary=first.text,
            summary_memory_id=first.memory_id,
            summary_vector=np.zeros_like(first.vector),
            first_memory_at=first.created_at,
            last_memory_at=first.created_at,
        )
        state.absorb(items)
        return state


@dataclass
class Plan:
    updated: list[DreamState]
    created: list[DreamState]
    quality: float | None
    points: int


def combine(plans: list[Plan]) -> Plan:
    """One batch's plans for several vector spaces as one: quality weighted by points scored."""
    if len(plans) == 1:
        return plans[0]
    scored = [(p.quality, p.points) for p in plans if p.quality is not None]
    weight = sum(points for _, points in scored)
    quality = sum(q * points for q, points in scored) / weight if weight else None
    return Plan(
        [d for p in plans for d in p.updated],
        [d for p in plans for d in p.created],
        quality,
        sum(p.points for p in plans),
    )


def user_mean(vectors: npt.NDArray[np.float32], dreams: list[DreamState]) -> npt.NDArray[np.float32]:
    """The mean vector of what this batch and the user's dreams hold (an estimate of the user's mean)."""
    total = vectors.sum(axis=0) + sum((d.centroid_sum for d in dreams), np.zeros(vectors.shape[1]))
    count = len(vectors) + sum(d.member_count for d in dreams)
    if count < MEAN_MIN_POINTS:  # too few memories to know this person's habits: no centering
        return np.zeros(vectors.shape[1], np.float32)
    mean: npt.NDArray[np.float32] = (total / count).astype(np.float32)
    return mean


def plan_batch(
    items: list[PlanItem],
    dreams: list[DreamState],
    attach: float = DEFAULT_ATTACH,
    merge: float = DEFAULT_MERGE,
) -> Plan:
    """Attach, group and score `items` (batch memories plus revisited singletons).

    `attach` (a memory to a dream) and `merge` (a new group or dream to a dream) are cosine
    thresholds around the user's mean, in the encoder's space (encoder.Thresholds)."""
    ordered = sorted(items, key=lambda i: (i.created_at, i.memory_id))
    if not ordered:
        return Plan([], [], None, 0)
    vectors = np.stack([i.vector for i in ordered]).astype(np.float32)
    centroids = (
        np.stack([d.centroid for d in dreams]).astype(np.float32)
        if dreams
        else np.zeros((0, vectors.shape[1]), np.float32)
    )
    assignment = clustering.assign(vectors, centroids, user_mean(vectors, dreams), attach, merge)

    by_dream: dict[int, list[int]] = {}
    for i, dream_index in enumerate(assignment.attached):
        if dream_index is not None:
            by_dream.setdefault(dream_index, []).append(i)
    updated = []
    for dream_index, members in sorted(by_dream.items()):
        dreams[dream_index].absorb([ordered[i] for i in members])
        updated.append(dreams[dream_index])
    created = [DreamState.from_items([ordered[i] for i in members]) for members in assignment.clusters]

    groups = [members for _, members in sorted(by_dream.items())] + assignment.clusters
    group_centroids = [dreams[d].centroid for d in sorted(by_dream)] + [c.centroid for c in created]
    score = clustering.quality(
        vectors,
        groups,
        [i.emotion_label for i in ordered],
        np.stack(group_centroids).astype(np.float32) if group_centroids else None,
    )
    name_themes([*dreams, *created])
    return Plan(updated, created, score, len(ordered))


def name_themes(dreams: list[DreamState]) -> None:
    """Each dream's keywords: its weightiest words, discounted by how many of the user's dreams share
    them (a word in most of one person's dreams says nothing about any one of them)."""
    counts: dict[str, int] = {}
    for dream in dreams:
        top = max(dream.term_weights.values(), default=0.0)
        for term, weight in dream.term_weights.items():
            if weight >= 0.2 * top:  # a word that matters in this dream, not a passing mention
                counts[term] = counts.get(term, 0) + 1
    total = len(dreams)
    for dream in dreams:
        # Words every one of the user's dreams has are left out when the dream has others to show.
        own = {t: w for t, w in dream.term_weights.items() if counts.get(t, 0) < total} or dream.term_weights
        scored = {t: w * math.log((1 + total) / (1 + counts.get(t, 0))) + 1e-9 * w for t, w in own.items()}
        dream.keywords = [t for t, _ in sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))[:THEME_SIZE]]


def plan_merges(dreams: list[DreamState], threshold: float = DEFAULT_MERGE) -> list[tuple[int, int]]:
    """(kept, absorbed) index pairs: each dream joins the most similar larger one when close enough
    (cosine of centroids around the user's mean).

    Dreams are visited largest first (ties by id), so the result does not depend on input order.
    """
    if len(dreams) < 2:
        return []
    mean = user_mean(np.zeros((0, len(dreams[0].centroid_sum)), np.float32), dreams)
    around = clustering.center(np.stack([d.centroid_sum for d in dreams]).astype(np.float32), mean)
    order = sorted(range(len(dreams)), key=lambda i: (-dreams[i].member_count, dreams[i].id or ""))
    kept: list[int] = []
    merges: list[tuple[int, int]] = []
    for index in order:
        vector = around[index]
        best, best_sim = None, threshold
        for k in kept:
            sim = float(around[k] @ vector)
            if sim >= best_sim:
                best, best_sim = k, sim
        if best is None:
            kept.append(index)
        else:
            dreams[best].merge(dreams[index])
            merges.append((best, index))
    return merges
