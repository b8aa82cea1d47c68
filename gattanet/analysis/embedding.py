"""The global query q as an embedding of the image (Figure 2b): collect it, map it to 2-D with UMAP,
and measure how well it separates classes and class groups (k-NN accuracy, silhouette), beside two controls of
the same dimension: a random projection of the same activations, and the penultimate features reduced by PCA."""

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from gattanet.models.attention import GlobalAttention
from gattanet.models.taps import Tap

MIN_UMAP_POINTS = 4  # UMAP's spectral initialisation needs more points than n_components + 1


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


def random_attention(taps: Sequence[Tap], dim: int, seed: int, kq_norm: bool = False,
                     score_norm: bool = False) -> GlobalAttention:
    """The query-space control: an attention system of the same shapes, freshly initialised from `seed` (never
    trained), in eval mode; its global query is a random d-dimensional projection of the same tapped
    activations, averaged over positions/units and layers as Eq. 3 averages the learned one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GlobalAttention(taps, dim, kq_norm=kq_norm, score_norm=score_norm).eval()


def penultimate_tap(taps: Sequence[Tap]) -> int:
    """The index of the penultimate features: the last dense tap before the logits (toy: fc1; ResNet: avgpool)."""
    dense = [i for i, t in enumerate(taps) if t.kind == "dense"]
    if len(dense) < 2 or dense[-1] != len(taps) - 1:
        raise ValueError(f"no dense tap before the logits among {[t.name for t in taps]}")
    return dense[-2]


def pca_project(fit: np.ndarray, X: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """X (n, p) reduced to its first `dim` principal components, the components fit on `fit` (m, p) alone
    (e.g. training images, so the test images the k-NN scores are not used to choose the projection)."""
    from sklearn.decomposition import PCA

    fit, X = np.asarray(fit, dtype=np.float64), np.asarray(X, dtype=np.float64)
    if fit.ndim != 2 or X.ndim != 2 or fit.shape[1] != X.shape[1]:
        raise ValueError(f"fit and X must be (m, p) and (n, p), got {fit.shape} and {X.shape}")
    if not 1 <= dim <= min(fit.shape):
        raise ValueError(f"dim must lie in [1, {min(fit.shape)}] for {fit.shape[0]} fit points of {fit.shape[1]} "
                         f"features, got {dim}")
    return PCA(n_components=dim, random_state=seed).fit(fit).transform(X)


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
