"""The global query q as an embedding of the image (Figure 2b): collect it, map it to 2-D with UMAP,
and measure how well it separates classes and class groups (k-NN accuracy, silhouette)."""

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from gattanet.data.loader import Loader

MIN_UMAP_POINTS = 4  # UMAP's spectral initialisation needs more points than n_components + 1


@torch.no_grad()
def collect_queries(model: nn.Module, loader: Loader, max_points: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The global query (B, d) of every image of `loader.epoch(0)` and its label, as numpy arrays.

    The model is put in eval mode (no dropout on keys/queries). With `max_points`, the first
    `max_points` images of the epoch are kept (a random subset when the loader shuffles).
    """
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1 or None, got {max_points}")
    model.eval()
    queries, labels, n = [], [], 0
    for x, y in loader.epoch(0):
        queries.append(model(x, return_state=True)[1].query.float().cpu())
        labels.append(y.cpu())
        n += len(y)
        if max_points is not None and n >= max_points:
            break
    if not queries:
        raise ValueError("the loader yielded no batches; there is nothing to embed")
    Q = torch.cat(queries)[:max_points].numpy()
    return Q, torch.cat(labels)[:max_points].numpy()


def umap_2d(Q: np.ndarray, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """A reproducible 2-D UMAP of the rows of Q (n, d) -> (n, 2) float64.

    n_neighbors is clamped to n - 1 for small n. When d ≤ 2 the query already is a (≤ 2)-D
    map, so it is returned as is, padded with a zero column when d = 1.
    """
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2 or not np.isfinite(Q).all():
        raise ValueError(f"Q must be a finite (n, d) array, got shape {Q.shape}")
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors}")
    n, d = Q.shape
    if d <= 2:
        return np.pad(Q, ((0, 0), (0, 2 - d)))
    if n < MIN_UMAP_POINTS:
        raise ValueError(f"UMAP needs at least {MIN_UMAP_POINTS} points, got {n}")
    import umap  # imported here: numba makes it slow to import, and only this function needs it

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), random_state=seed, n_jobs=1)
    return reducer.fit_transform(Q).astype(np.float64)


def knn_accuracy(X: np.ndarray, y: np.ndarray, k: int = 10, folds: int = 5, seed: int = 0) -> float:
    """Fraction of points whose class a k-NN classifier (fit on the other folds) predicts correctly."""
    return float(knn_correct(X, y, k, folds, seed).mean())


def knn_correct(X: np.ndarray, y: np.ndarray, k: int = 10, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Per point, whether a k-NN classifier fit on the other folds predicts its class (bool (n,)).

    Folds are a seeded shuffled K-fold split; k is clamped to the size of the smallest training fold.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.shape != (len(X),):
        raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 2 <= folds <= len(X):
        raise ValueError(f"folds must lie in [2, n={len(X)}], got {folds}")
    smallest_train = len(X) - -(-len(X) // folds)
    knn = KNeighborsClassifier(n_neighbors=min(k, smallest_train))
    return cross_val_predict(knn, X, y, cv=KFold(folds, shuffle=True, random_state=seed)) == y


def group_labels(y: np.ndarray, groups: dict[str, Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(keep, g): which points belong to a class group, and the group index of those that do."""
    names = list(groups)
    group_of: dict[int, int] = {}
    for g, name in enumerate(names):
        for c in groups[name]:
            if int(c) in group_of:
                raise ValueError(f"class {c} is in groups {names[group_of[int(c)]]!r} and {name!r}; "
                                 "groups must be disjoint")
            group_of[int(c)] = g
    y = np.asarray(y)
    keep = np.array([int(c) in group_of for c in y], dtype=bool)
    return keep, np.array([group_of[int(c)] for c in y[keep]], dtype=np.int64)


def group_separation(X2: np.ndarray, y: np.ndarray, groups: dict[str, Sequence[int]],
                     k: int = 10, seed: int = 0) -> dict:
    """How well the 2-D map separates class groups (e.g. animals vs vehicles): k-NN accuracy on group
    labels and the silhouette score of the groups. Points of classes in no group are left out."""
    X2, names = np.asarray(X2), list(groups)
    keep, g = group_labels(y, groups)
    present = np.unique(g)
    if len(present) < 2 or len(g) <= len(present):
        raise ValueError(f"group separation needs points of at least 2 groups (and more points than "
                         f"groups); found {len(g)} points in groups {[names[i] for i in present]}")
    return {"names": names,
            "knn_acc_2d": knn_accuracy(X2[keep], g, k=k, seed=seed),
            "silhouette": float(silhouette_score(X2[keep], g))}


def embedding_stats(Q: np.ndarray, X2: np.ndarray, y: np.ndarray, classes: Sequence[str],
                    groups: dict[str, Sequence[int]] | None, k: int, seed: int = 0) -> dict:
    """The stats.json of the embedding: class k-NN accuracy in query space and in 2-D, chance (the
    most common class's frequency), and the group separation (None without groups)."""
    y = np.asarray(y)
    if len(Q) != len(y) or len(X2) != len(y):
        raise ValueError(f"Q, X2 and y must have the same number of points, "
                         f"got {len(Q)}, {len(X2)}, {len(y)}")
    return {"n_points": int(len(y)),
            "attn_dim": int(np.asarray(Q).shape[1]),
            "classes": list(classes),
            "knn_k": int(k),
            "knn_acc_query": knn_accuracy(Q, y, k=k, seed=seed),
            "knn_acc_2d": knn_accuracy(X2, y, k=k, seed=seed),
            "chance": float(np.bincount(y).max() / len(y)),
            "groups": group_separation(X2, y, groups, k=k, seed=seed) if groups else None}
