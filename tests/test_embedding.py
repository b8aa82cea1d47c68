import numpy as np
import pytest

import torch

from gattanet.analysis.embedding import (group_labels, group_separation, knn_accuracy, knn_correct, pca_project,
                                         penultimate_tap, random_attention, umap_2d)
from gattanet.analysis.stats import effect_ci
from gattanet.models.taps import Tap


def blobs(n_per: int, centers: np.ndarray, spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.normal(size=(n_per, centers.shape[1])) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    return X, y


def test_knn_accuracy_separated_clusters_and_shuffled_labels():
    X, y = blobs(50, np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]]), 1.0)
    assert knn_accuracy(X, y, k=5) > 0.97
    rng = np.random.default_rng(3)
    Xr, yr = rng.normal(size=(600, 3)), rng.integers(0, 4, 600)
    assert abs(knn_accuracy(Xr, yr, k=10) - 0.25) < 0.1
    assert knn_accuracy(X, y, seed=1) == knn_accuracy(X, y, seed=1)


def test_knn_accuracy_clamps_k_and_rejects_bad_input():
    X, y = blobs(3, np.array([[0.0, 0.0], [10.0, 10.0]]), 0.1)
    # 6 points in 3 folds: every training fold has 4 points, so k = 50 acts as k = 4
    assert knn_accuracy(X, y, k=50, folds=3) == knn_accuracy(X, y, k=4, folds=3)
    with pytest.raises(ValueError):
        knn_accuracy(X, y[:-1])
    with pytest.raises(ValueError):
        knn_accuracy(X, y, folds=1)
    with pytest.raises(ValueError):
        knn_accuracy(X, y, k=0)


def test_knn_correct_is_per_point_and_averages_to_knn_accuracy():
    X, y = blobs(40, np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]]), 1.5)  # overlapping: some points wrong
    for k, folds, seed in ((1, 5, 0), (5, 3, 1), (10, 5, 2), (50, 4, 0)):
        hits = knn_correct(X, y, k=k, folds=folds, seed=seed)
        assert hits.dtype == bool and hits.shape == (120,)
        assert hits.mean() == knn_accuracy(X, y, k=k, folds=folds, seed=seed)
    hits = knn_correct(X, y, k=5)
    assert 0.5 < hits.mean() < 1.0
    np.testing.assert_array_equal(hits, knn_correct(X, y, k=5))  # seeded folds
    # a point moved into a cluster of another class is one the k-NN gets wrong
    X2, y2 = X.copy(), y.copy()
    X2[0] = [30.0, 30.0]
    X2 = np.concatenate([X2, np.full((10, 2), 30.0) + np.random.default_rng(1).normal(size=(10, 2))])
    y2 = np.concatenate([y2, np.full(10, 2)])
    assert y2[0] == 0 and not knn_correct(X2, y2, k=5)[0]
    with pytest.raises(ValueError):
        knn_correct(X, y[:-1])
    with pytest.raises(ValueError):
        knn_correct(X, y, k=0)


def test_group_labels_keep_grouped_classes_and_number_the_groups_in_order():
    y = np.array([0, 3, 1, 4, 2, 0, 4])
    keep, g = group_labels(y, {"b": (2, 3), "a": (0,)})  # class 1 and 4 in no group
    np.testing.assert_array_equal(keep, [True, True, False, False, True, True, False])
    np.testing.assert_array_equal(g, [1, 0, 0, 1])  # "b" is group 0: the order of the dict
    assert g.dtype == np.int64
    with pytest.raises(ValueError, match="disjoint"):
        group_labels(y, {"a": (0, 1), "b": (1,)})


def test_umap_2d_shape_finite_and_reproducible():
    X, _ = blobs(50, np.eye(4, 8) * 5, 1.0)  # 200 points, d = 8
    a, b = umap_2d(X, seed=0), umap_2d(X, seed=0)
    assert a.shape == (200, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_umap_2d_low_dim_is_identity_padded_and_tiny_n_rejected():
    q1 = np.arange(5.0)[:, None]
    np.testing.assert_array_equal(umap_2d(q1, seed=0), np.stack([np.arange(5.0), np.zeros(5)], 1))
    q2 = np.random.default_rng(0).normal(size=(3, 2))
    np.testing.assert_array_equal(umap_2d(q2, seed=0), q2)
    with pytest.raises(ValueError, match="at least"):
        umap_2d(np.zeros((3, 5)), seed=0)
    with pytest.raises(ValueError):
        umap_2d(np.full((10, 3), np.nan), seed=0)


def test_group_separation_separated_vs_mixed_groups():
    # classes 0,1 share a blob, classes 2,3 share another far away; class 4 belongs to no group
    X, y = blobs(30, np.array([[0.0, 0.0], [0.0, 0.0], [20.0, 0.0], [20.0, 0.0], [50.0, 50.0]]), 1.0)
    sep = group_separation(X, y, {"near": (0, 1), "far": (2, 3)}, k=5)
    assert sep["names"] == ["near", "far"]
    assert sep["knn_acc_2d"] == 1.0 and sep["silhouette"] > 0.8
    mixed = group_separation(X, y, {"a": (0, 2), "b": (1, 3)}, k=5)
    assert mixed["silhouette"] < sep["silhouette"] and mixed["knn_acc_2d"] < 0.75
    with pytest.raises(ValueError, match="disjoint"):
        group_separation(X, y, {"a": (0, 1), "b": (1, 2)})
    with pytest.raises(ValueError, match="2 groups"):
        group_separation(X, y, {"a": (0, 1), "b": (7,)})


# ---------------------------------------------------------------- the query-space controls

TAPS = [Tap("conv1", "conv", (8, 6, 6)), Tap("fc1", "dense", (12,)), Tap("logits", "dense", (3,))]


def test_random_attention_is_an_untrained_system_of_the_same_shapes_seeded_and_in_eval():
    a, b, c = (random_attention(TAPS, 4, seed) for seed in (7, 7, 8))
    assert not a.training and torch.equal(a.alpha, torch.zeros(3))
    assert [p.shape for p in a.parameters()] == [p.shape for p in c.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))   # same seed, same projection
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    before = torch.random.get_rng_state()
    random_attention(TAPS, 4, 9)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random stream is left alone
    acts = [torch.randn(5, 8, 6, 6), torch.randn(5, 12), torch.randn(5, 3)]
    q = a(acts, with_kq=False).query
    assert q.shape == (5, 4) and torch.equal(q, b(acts, with_kq=False).query)


def test_penultimate_tap_is_the_dense_layer_before_the_logits():
    assert penultimate_tap(TAPS) == 1
    resnet = [Tap(f"layer{i}", "conv", (8, 2, 2)) for i in range(1, 5)] + [Tap("avgpool", "dense", (8,)),
                                                                           Tap("logits", "dense", (3,))]
    assert resnet[penultimate_tap(resnet)].name == "avgpool"
    with pytest.raises(ValueError, match="no dense tap before the logits"):
        penultimate_tap(TAPS[:1] + TAPS[2:])


def test_pca_project_fits_on_its_own_points_and_keeps_the_leading_directions():
    rng = np.random.default_rng(0)
    fit = rng.normal(size=(500, 6)) * np.array([10.0, 5.0, 1.0, 1.0, 1.0, 1.0])  # two strong directions
    X = rng.normal(size=(50, 6))
    Z = pca_project(fit, X, 2)
    assert Z.shape == (50, 2)
    centred = X - fit.mean(axis=0)  # the projection onto the fit's two leading axes (±1 per axis)
    assert np.allclose(np.abs(Z), np.abs(centred[:, :2]), atol=0.2)
    other = pca_project(rng.normal(size=(500, 6)) * np.array([1.0, 1.0, 1.0, 1.0, 5.0, 10.0]), X, 2)
    assert not np.allclose(np.abs(other), np.abs(Z), atol=0.2)  # another fit set, another projection
    with pytest.raises(ValueError, match="dim must lie in"):
        pca_project(fit, X, 7)
    with pytest.raises(ValueError, match="fit and X"):
        pca_project(fit, X[:, :5], 2)


def test_q_beats_a_control_that_ignores_the_class_and_ties_one_that_keeps_it():
    """The contrast the query_space claim reads: k-NN hits on q minus on a control, paired on the same images."""
    X, y = blobs(150, np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), 1.0)
    rng = np.random.default_rng(1)
    q = np.concatenate([X, rng.normal(size=(len(X), 2))], axis=1)  # the class in its first two coordinates
    blind = rng.normal(size=(len(X), 4))                            # nothing of the class
    hits = knn_correct(q, y, 10)[None].astype(float)
    est = effect_ci([(1.0, hits), (-1.0, knn_correct(blind, y, 10)[None].astype(float))])
    assert est.low > 0.3
    tie = effect_ci([(1.0, hits), (-1.0, knn_correct(q @ np.diag([1.0, 1.0, 1.0, 1.0]), y, 10)[None].astype(float))])
    assert tie.mean == 0 and tie.low <= 0 <= tie.high
