"""Paired accuracies: same batches for every forward, top-k, batch-size independence, no_grad;
per-image correctness (one forward per model, or one function for all models of a batch)."""

import pytest
import torch
from torch import nn

from gattanet.data.datasets import TensorData
from gattanet.engine.evaluate import accuracies, accuracy, correct, correct_batched
from gattanet.data.loader import Finish, TensorLoader


def data(n: int = 30, classes: int = 5) -> TensorData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    return TensorData(images, torch.randint(0, classes, (n,), generator=g), (0.5,), (0.3,),
                      tuple("abcde"[:classes]))


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()


@torch.no_grad()
def predicted(model, loader):
    """(predicted class, label) of every image in loader order: the reference the figures are checked against."""
    batches = list(loader.epoch(0))
    return torch.cat([model(x).argmax(1) for x, _ in batches]), torch.cat([y for _, y in batches])


def test_accuracy_does_not_depend_on_batch_size_with_noise():
    model = linear()
    d = data()
    small = TensorLoader(d, 7, Finish(d.mean, d.std, sigma=0.2, noise_seed=1))
    large = TensorLoader(d, 64, Finish(d.mean, d.std, sigma=0.2, noise_seed=1))
    a, b = accuracies({"m": model}, small, topk=(1, 3)), accuracies({"m": model}, large, topk=(1, 3))
    assert a == b
    clean = accuracies({"m": model}, TensorLoader(data(), 64), topk=(1, 3))
    assert clean != a  # the noise changes some predictions
    pred, labels = predicted(model, large)
    assert a["m"]["top1"] == (pred == labels).sum().item() / len(labels)


def test_topk_counts_labels_among_the_k_best():
    d = data()
    d.images[:, 0, 0, 0] = d.labels.to(torch.uint8) * 50  # the label, readable from the image
    d.images[:, 0, 0, 1] = torch.arange(30, dtype=torch.uint8) % 5 * 50  # the rank to put it at

    def ranked(x):
        pixels = ((x[:, 0, 0, :2] * 0.3 + 0.5) * 255 / 50).round().long()
        logits = torch.zeros(len(x), 5)
        for row, (label, rank) in enumerate(pixels.tolist()):
            order = [c for c in range(5) if c != label]
            order.insert(rank, label)
            logits[row, order] = torch.arange(5, 0, -1, dtype=torch.float)
        return logits

    acc = accuracy(ranked, TensorLoader(d, 8), topk=(1, 2, 5))
    assert acc == {"top1": pytest.approx(1 / 5), "top2": pytest.approx(2 / 5), "top5": 1.0}


def test_forwards_see_the_same_batches_under_no_grad():
    seen = {"a": [], "b": []}

    def recorder(name):
        def forward(x):
            assert not torch.is_grad_enabled()
            seen[name].append(x.clone())
            with torch.enable_grad():  # a forward may need autograd inside: not inference_mode
                w = torch.ones(16, 5, requires_grad=True)
                out = x.flatten(1) @ w
                torch.autograd.grad(out.sum(), w)
            return out.detach()
        return forward

    d = data()
    result = accuracies({"a": recorder("a"), "b": recorder("b")}, TensorLoader(d, 8, Finish(d.mean, d.std, sigma=0.1)))
    assert set(result) == {"a", "b"} and result["a"] == result["b"]
    assert len(seen["a"]) == 4 and all(torch.equal(x, y) for x, y in zip(seen["a"], seen["b"]))


def test_bad_arguments():
    loader = TensorLoader(data(), 8)
    with pytest.raises(ValueError, match="top-6 asked of 5 classes"):
        accuracy(linear(), loader, topk=(1, 6))
    with pytest.raises(ValueError, match="topk"):
        accuracy(linear(), loader, topk=(0,))
    with pytest.raises(ValueError, match="no forwards"):
        accuracies({}, loader)


def test_correct_rows_pair_up_with_the_labels_and_give_the_accuracies():
    d, loader = data(), TensorLoader(data(), 7)
    hits = correct({"a": linear(0), "b": linear(1)}, loader, topk=(1, 3))
    assert hits["a"].shape == (30, 2) and hits["a"].dtype == torch.bool
    pred, labels = predicted(linear(1), loader)
    assert torch.equal(hits["b"][:, 0], pred == labels) and torch.equal(labels, d.labels)
    assert accuracies({"a": linear(0)}, loader, topk=(1, 3))["a"] == {
        "top1": int(hits["a"][:, 0].sum()) / 30, "top3": int(hits["a"][:, 1].sum()) / 30}


def test_correct_batched_gives_what_correct_gives_with_one_call_per_batch():
    d = data()
    loader = TensorLoader(d, 7, Finish(d.mean, d.std, sigma=0.2, noise_seed=4))
    models = {"a": linear(0), "b": linear(1), "c": linear(2)}
    calls = []

    def logits_of(x):
        assert not torch.is_grad_enabled()
        calls.append(len(x))
        return {name: m(x) for name, m in models.items()}

    batched = correct_batched(logits_of, loader, topk=(1, 3))
    separate = correct(models, loader, topk=(1, 3))
    assert calls == [7, 7, 7, 7, 2]  # one call per batch for all three models
    assert set(batched) == set(models)
    for name in models:
        assert batched[name].shape == (30, 2) and batched[name].dtype == torch.bool
        assert torch.equal(batched[name], separate[name]), name
    assert not torch.equal(batched["a"], batched["b"])  # different models: a swap would show


def test_correct_batched_refuses_an_empty_loader_and_too_large_k():
    class Empty:
        def epoch(self, e):
            return iter(())

    with pytest.raises(ValueError, match="loader is empty"):
        correct_batched(lambda x: {"a": x}, Empty())
    with pytest.raises(ValueError, match="top-6 asked of 5 classes"):
        correct_batched(lambda x: {"a": linear()(x)}, TensorLoader(data(), 8), topk=(6,))
    with pytest.raises(ValueError, match="topk"):
        correct_batched(lambda x: {"a": linear()(x)}, TensorLoader(data(), 8), topk=())
