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
ATTACH_THRESHOLD = 0.25
CLUSTER_THRESHOLD = 0.20
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


def assign(
    vectors: FloatMatrix,
    dream_centroids: FloatMatrix,
    attach_threshold: float = ATTACH_THRESHOLD,
    cluster_threshold: float = CLUSTER_THRESHOLD,
) -> Assignment:
    """Attach each point to its closest dream when close enough; cluster the others (clusters of 2+ kept)."""
    n = len(vectors)
    attached: list[int | None] = [None] * n
    if len(dream_centroids) and n:
        sims = vectors @ _unit(dream_centroids).T
        best = sims.argmax(axis=1)
        for i in range(n):
            if sims[i, best[i]] >= attach_threshold:
                attached[i] = int(best[i])
    free = [i for i in range(n) if attached[i] is None]
    labels = leader_cluster(vectors[free], cluster_threshold) if free else []
    groups: dict[int, list[int]] = {}
    for point, label in zip(free, labels, strict=True):
        groups.setdefault(label, []).append(point)
    clusters = [members for _, members in sorted(groups.items()) if len(members) >= 2]
    return Assignment(attached, clusters)


def leader_cluster(vectors: FloatMatrix, threshold: float) -> list[int]:
    """Sequential leader clustering with running centroids, then one nearest-centroid reassignment."""
    centroids: list[npt.NDArray[np.float32]] = []
    sums: list[npt.NDArray[np.float32]] = []
    labels: list[int] = []
    for vector in vectors:
        if centroids:
            sims = np.array([float(c @ vector) for c in centroids])
            best = int(sims.argmax())
            if sims[best] >= threshold:
                labels.append(best)
                sums[best] = sums[best] + vector
                centroids[best] = sums[best] / max(float(np.linalg.norm(sums[best])), 1e-9)
                continue
        labels.append(len(centroids))
        sums.append(vector.copy())
        centroids.append(vector.copy())
    if len(centroids) < 2:
        return labels
    matrix = np.stack(centroids)
    refined = []
    for vector, label in zip(vectors, labels, strict=True):
        sims = matrix @ vector
        best = int(sims.argmax())
        refined.append(
            best if sims[best] >= threshold and best != label and sims[best] > sims[label] else label
        )
    return refined


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
