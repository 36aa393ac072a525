"""Attach memories to existing dreams, cluster the rest, and score the result. Pure NumPy, no I/O.

Order independence: points are clustered in a canonical order (the caller sorts by created_at, id)
and then reassigned once to their nearest centroid, so the same memories always give the same
dreams and the same quality, whatever order they arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float32]
# Cuts tried by `natural_clusters` (cosine distance of average linkage; similarity 0.95 .. 0.05).
CUT_DISTANCES = tuple(round(0.05 * i, 2) for i in range(1, 20))
MIN_SILHOUETTE = 0.02
SMALL_GROUP = 5  # groups smaller than this must also be tight (natural_clusters)
QUALITY_WEIGHTS = {"cohesion": 0.45, "separation": 0.35, "purity": 0.20}


@dataclass
class Assignment:
    """For each point the index of the existing dream it joins (`attached`), and the new clusters."""

    attached: list[int | None]
    clusters: list[list[int]]  # new clusters of 2+ points (point indices)


def _unit(matrix: FloatMatrix) -> FloatMatrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: FloatMatrix = (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return out


def center(vectors: FloatMatrix, mean: npt.NDArray[np.float32]) -> FloatMatrix:
    """Unit vectors after removing the user's mean: what all of one person's memories share (their
    habits of writing, their usual subjects) says nothing about which theme a memory belongs to."""
    return _unit((vectors - mean).astype(np.float32))


def silhouette(unit_vectors: FloatMatrix, labels: npt.NDArray[np.int64]) -> float:
    """Mean silhouette with cosine distance; a point alone in its cluster scores 0 (Rousseeuw's rule)."""
    ids, labels = np.unique(labels, return_inverse=True)
    n, k = len(labels), len(ids)
    if k < 2 or k >= n:
        return -1.0
    distance = 1.0 - unit_vectors @ unit_vectors.T
    onehot = np.zeros((n, k), np.float32)
    onehot[np.arange(n), labels] = 1.0
    sizes = onehot.sum(axis=0)
    sums = distance @ onehot  # (n, k): total distance of each point to each cluster
    own = sizes[labels]
    a = sums[np.arange(n), labels] / np.maximum(own - 1, 1)
    others = sums / np.maximum(sizes, 1)
    others[np.arange(n), labels] = np.inf
    b = others.min(axis=1)
    score = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-9), 0.0)
    return float(score.mean())


def natural_clusters(
    unit_vectors: FloatMatrix, min_silhouette: float = MIN_SILHOUETTE, small_min: float = 0.4
) -> list[list[int]]:
    """Groups of 2+ points by average-linkage agglomeration, cut where the silhouette is best.

    No fixed similarity threshold: the cut adapts to how alike this person's memories are (broad
    diary themes and fine-grained intents both come out). Returns no groups when even the best cut
    has a silhouette under `min_silhouette`, and drops groups of 2-4 whose mean cosine is under
    `small_min` (unrelated texts).
    """
    n = len(unit_vectors)
    if n < 3:
        return [list(range(n))] if n == 2 and _tight(unit_vectors, small_min) else []
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(unit_vectors.astype(np.float64), method="average", metric="cosine")
    best_labels, best_score = None, min_silhouette
    for cut in CUT_DISTANCES:
        labels = fcluster(tree, cut, criterion="distance")
        score = silhouette(unit_vectors, labels)
        if score > best_score:
            best_labels, best_score = labels, score
    if best_labels is None:  # no split is better than chance: one theme if they are all alike
        return [list(range(n))] if _tight(unit_vectors, small_min) else []
    groups: dict[int, list[int]] = {}
    for point, label in enumerate(best_labels):
        groups.setdefault(int(label), []).append(point)
    return [
        g for _, g in sorted(groups.items()) if len(g) >= SMALL_GROUP or _tight(unit_vectors[g], small_min)
    ]


def _tight(members: FloatMatrix, minimum: float) -> bool:
    """A small group (2-4 memories) is a theme only when its members are really alike: chance alone makes
    many loose pairs among unrelated texts (measured: docs/dream-engine.md)."""
    if len(members) < 2:
        return False
    sims = members @ members.T
    return float(sims[np.triu_indices(len(members), 1)].mean()) >= minimum


def assign(
    vectors: FloatMatrix,
    dream_centroids: FloatMatrix,
    mean: npt.NDArray[np.float32],
    attach_threshold: float,
    merge_threshold: float,
    small_min: float = 0.4,
) -> Assignment:
    """Attach points to their closest dream when close enough; group the others; a new group whose
    centroid is close to a dream's joins that dream. Similarities are taken around the user's mean."""
    n = len(vectors)
    points = center(vectors, mean)
    dreams = center(dream_centroids, mean) if len(dream_centroids) else dream_centroids
    attached: list[int | None] = [None] * n
    if len(dreams) and n:
        sims = points @ dreams.T
        best = sims.argmax(axis=1)
        for i in range(n):
            if sims[i, best[i]] >= attach_threshold:
                attached[i] = int(best[i])
    free = [i for i in range(n) if attached[i] is None]
    clusters = []
    for members in natural_clusters(points[free], MIN_SILHOUETTE, small_min) if free else []:
        group = [free[m] for m in members]
        target = _closest_dream(points[group].sum(axis=0), dreams, merge_threshold)
        if target is None:
            clusters.append(group)
        else:
            for point in group:
                attached[point] = target
    return Assignment(attached, clusters)


def _closest_dream(direction: npt.NDArray[np.float32], dreams: FloatMatrix, threshold: float) -> int | None:
    if not len(dreams):
        return None
    sims = dreams @ (direction / max(float(np.linalg.norm(direction)), 1e-9))
    best = int(sims.argmax())
    return best if float(sims[best]) >= threshold else None


def quality(
    vectors: FloatMatrix,
    groups: list[list[int]],
    emotions: list[str | None],
    group_centroids: FloatMatrix | None = None,
) -> float | None:
    """Clustering quality in [0, 1]; None (undefined) for fewer than 3 points.

    quality = coverage × (0.45 cohesion + 0.35 separation + 0.20 emotion purity), where coverage is
    the share of points in a group of 2+ (or attached to a dream), cohesion the mean cosine of a
    point to its group centroid, separation 1 − the mean cosine between each group centroid and its
    nearest other one (1 with a single group), and purity the mean share of a group's annotated
    members carrying its most common emotion (left out, weights renormalised, when nothing is
    annotated). Unrelated texts form almost no groups, so coverage keeps their quality near 0.
    """
    n = len(vectors)
    if n < 3:
        return None
    grouped = [g for g in groups if g]
    covered = sum(len(g) for g in grouped)
    if not covered:
        return 0.0
    if group_centroids is None:
        group_centroids = np.stack([vectors[g].sum(axis=0) for g in grouped])
    centroids = _unit(group_centroids)
    cohesion = float(np.mean([float(vectors[i] @ centroids[k]) for k, g in enumerate(grouped) for i in g]))
    if len(grouped) > 1:
        between = centroids @ centroids.T
        np.fill_diagonal(between, -1.0)
        separation = 1.0 - max(0.0, float(between.max(axis=1).mean()))
    else:
        separation = 1.0
    purities = []
    for g in grouped:
        labels = [emotions[i] for i in g if emotions[i]]
        if labels:
            purities.append(max(labels.count(x) for x in set(labels)) / len(labels))
    parts = {"cohesion": max(0.0, cohesion), "separation": separation}
    if purities:
        parts["purity"] = float(np.mean(purities))
    total_weight = sum(QUALITY_WEIGHTS[k] for k in parts)
    score = sum(QUALITY_WEIGHTS[k] * v for k, v in parts.items()) / total_weight
    return round(min(1.0, max(0.0, (covered / n) * score)), 6)
