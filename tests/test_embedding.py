import numpy as np
import pytest
import torch

from gattanet.models.attention import GlobalAttention
from gattanet.models.registry import build_backbone
from gattanet.data.datasets import TensorData
from gattanet.analysis.embedding import (collect_queries, embedding_stats, group_labels, group_separation, knn_accuracy,
                                knn_correct, umap_2d)
from gattanet.data.loader import TensorLoader
from gattanet.models.gattanet import GAttANet


def toy_model_and_data(n: int = 10, dim: int = 4):
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), dim))
    g = torch.Generator().manual_seed(1)
    data = TensorData(images=torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
                      labels=torch.arange(n) % 10, mean=(0.5,), std=(0.25,),
                      classes=tuple(str(c) for c in range(10)))
    return model, data


def blobs(n_per: int, centers: np.ndarray, spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.normal(size=(n_per, centers.shape[1])) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    return X, y


def test_collect_queries_matches_the_model_query_in_eval_mode():
    model, data = toy_model_and_data()
    model.train()  # dropout on: collect_queries must switch it off
    loader = TensorLoader(data, batch_size=4)
    Q, labels = collect_queries(model, loader, max_points=6)
    assert Q.shape == (6, 4) and Q.dtype == np.float32
    np.testing.assert_array_equal(labels, data.labels[:6].numpy())
    assert not model.training
    x = next(loader.epoch(0))[0]
    with torch.no_grad():
        direct = model(x, return_state=True)[1].query.numpy()
    np.testing.assert_allclose(Q[:4], direct, rtol=1e-5, atol=1e-6)
    Q_all, labels_all = collect_queries(model, loader)
    assert Q_all.shape == (10, 4) and len(labels_all) == 10
    np.testing.assert_array_equal(Q_all[:6], Q)
    with pytest.raises(ValueError):
        collect_queries(model, loader, max_points=0)


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


def test_embedding_stats_assembles_the_contract():
    X, y = blobs(20, np.array([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]]), 0.5)
    y = y[:50]  # classes of 20, 20, 10 points: chance is the most common class's share
    Q, X2 = X[:50], X[:50, :2]
    stats = embedding_stats(Q, X2, y, ["a", "b", "c"], {"ab": (0, 1), "c": (2,)}, k=5)
    assert set(stats) == {"n_points", "attn_dim", "classes", "knn_k", "knn_acc_query", "knn_acc_2d",
                          "chance", "groups"}
    assert stats["n_points"] == 50 and stats["attn_dim"] == 3 and stats["knn_k"] == 5
    assert stats["chance"] == pytest.approx(20 / 50)
    assert stats["knn_acc_query"] == knn_accuracy(Q, y, k=5)
    assert stats["groups"]["names"] == ["ab", "c"]
    assert embedding_stats(Q, X2, y, ["a", "b", "c"], None, k=5)["groups"] is None
    with pytest.raises(ValueError):
        embedding_stats(Q, X2[:10], y, ["a", "b", "c"], None, k=5)
