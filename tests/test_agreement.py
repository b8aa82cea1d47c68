import numpy as np
import pytest
import torch

from gattanet.analysis.agreement import agreement_maps, sample_indices, true_class_hit_table, true_class_hits
from gattanet.models.attention import GlobalAttention
from gattanet.models.registry import build_backbone
from gattanet.data.datasets import TensorData
from gattanet.data.loader import TensorLoader
from gattanet.models.gattanet import GAttANet

CLASSES = tuple(str(c) for c in range(10))


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_model(dim: int = 4) -> GAttANet:
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), dim))
    with torch.no_grad():
        model.attention.alpha.fill_(0.5)  # modulate, so GAttANet and baseline can differ
    return model


def random_data(n: int) -> TensorData:
    g = torch.Generator().manual_seed(1)
    return TensorData(images=torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
                      labels=torch.randint(0, 10, (n,), generator=g), mean=(0.5,), std=(0.25,),
                      classes=CLASSES)


class Batches:
    """A loader stand-in: fixed (x, y) batches as epoch 0."""

    def __init__(self, batches):
        self.batches = batches

    def epoch(self, e: int):
        return iter(self.batches)


def test_sample_indices_one_per_class_and_seeded():
    labels = np.repeat(np.arange(5), 20)
    np.random.default_rng(0).shuffle(labels)
    idx = sample_indices(labels, seed=3)
    assert idx.dtype == torch.int64
    assert labels[idx.numpy()].tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(sample_indices(labels, seed=3), idx)
    assert not torch.equal(sample_indices(labels, seed=4), idx)
    two = sample_indices(torch.as_tensor(labels), per_class=2, seed=0)
    assert len(set(two.tolist())) == 10 and labels[two.numpy()].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="fewer"):
        sample_indices([0, 0, 1], per_class=2)
    with pytest.raises(ValueError):
        sample_indices(labels, per_class=0)
    with pytest.raises(ValueError, match="non-empty"):
        sample_indices([])


def test_agreement_maps_shapes_and_predictions():
    model = toy_model()
    model.train()
    data = random_data(3)
    x = next(TensorLoader(data, batch_size=3).epoch(0))[0]
    maps = agreement_maps(model, x, data.labels, CLASSES)
    assert not model.training
    with torch.no_grad():
        logits, state = model(x, return_state=True)
        base = model.baseline(x)
    assert len(maps) == 3
    for b, m in enumerate(maps):
        assert m["label"] == int(data.labels[b])
        assert m["pred_gattanet"] == int(logits[b].argmax())
        assert m["pred_baseline"] == int(base[b].argmax())
        assert len(m["scores"]) == len(model.taps)
        for tap, s, full in zip(model.taps, m["scores"], state.scores):
            want = tap.shape[1:] if tap.kind == "conv" else tap.shape
            assert np.array(s).shape == tuple(want)
            np.testing.assert_allclose(s, full[b].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        agreement_maps(model, x, [0, 1, 10], CLASSES)
    with pytest.raises(ValueError, match="classes"):
        agreement_maps(model, x, [0, 1, 2], CLASSES[:5])


def test_true_class_hit_table_equals_each_models_own_forward():
    """Per model and image, from the shared first pass: the true class ranked by that model's α·a of its own
    forward's last-tap scores (several seeds on one backbone, rows in the models' order)."""
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1)
    models = {}
    for seed in (0, 1):
        m = GAttANet(backbone, GlobalAttention(backbone.taps(), 4)).eval()
        with torch.no_grad():
            m.attention.alpha.fill_(0.5 if seed == 0 else -0.5)
            for p in m.attention.layers.parameters():
                p.normal_(0, 1, generator=torch.Generator().manual_seed(seed))
        models[str(seed)] = m
    data = random_data(40)
    loader = TensorLoader(data, batch_size=16)
    table = true_class_hit_table(models, loader)
    assert set(table) == {"top1", "top3"} and table["top1"].shape == table["top3"].shape == (2, 40)
    assert table["top1"].dtype == bool
    for row, m in enumerate(models.values()):
        with torch.no_grad():
            scores = torch.cat([m(x, return_state=True)[1].scores[-1] for x, _ in loader.epoch(0)])
        modulation = scores * m.attention.alpha[-1]
        top3 = [int(y) in torch.topk(s, 3).indices.tolist() for s, y in zip(modulation, data.labels)]
        np.testing.assert_array_equal(table["top1"][row], (modulation.argmax(1) == data.labels).numpy())
        np.testing.assert_array_equal(table["top3"][row], top3)
        assert table["top1"][row].sum() <= table["top3"][row].sum()
    assert not np.array_equal(table["top3"][0], table["top3"][1])  # the two seeds' attention really differ
    with pytest.raises(ValueError, match="no images"):
        true_class_hit_table(models, Batches([]))


def test_true_class_hits_per_image_on_constructed_scores():
    # 5 images, 5 classes; the true class ranks 1st, 2nd, 3rd, 4th and 5th
    scores = torch.tensor([[9., 1, 2, 3, 4], [3., 4, 1, 0, 0], [0., 4, 3, 5, 1], [1., 2, 3, 4, 0], [0., 1, 2, 3, 4]])
    y = torch.tensor([0, 0, 2, 0, 0])
    top1, top3 = true_class_hits(scores, y)
    assert top1.dtype == top3.dtype == torch.bool
    assert top1.tolist() == [True, False, False, False, False]
    assert top3.tolist() == [True, True, True, False, False]
    assert true_class_hits(scores[:, :2], torch.tensor([1, 0, 0, 0, 1]))[1].all()  # 2 classes: always in the top 3
    with pytest.raises(ValueError, match="logits"):
        true_class_hits(torch.zeros(2, 3, 3), torch.zeros(2, dtype=torch.long))


def test_true_class_ranking_is_invariant_to_the_sign_symmetry_of_alpha_and_keys():
    """(α, W_k) → (−α, −W_k) on the last tap leaves GAttANet unchanged; the true-class measure must not
    change either (ranking by the raw score a would turn 'most enhanced' into 'least enhanced')."""
    model = toy_model()
    with torch.no_grad():
        model.attention.alpha[-1] = 0.7
    loader = TensorLoader(random_data(40), batch_size=20)
    before = true_class_hit_table({"m": model}, loader)
    x = next(iter(loader.epoch(0)))[0]
    with torch.no_grad():
        logits = model(x)
        model.attention.alpha[-1] *= -1
        keys = model.attention.layers[-1].proj.weight[:, :model.attention.dim]
        keys.mul_(-1)
        assert torch.allclose(model(x), logits, atol=1e-5)
    after = true_class_hit_table({"m": model}, loader)
    assert all(np.array_equal(after[k], before[k]) for k in before)
    scores = torch.tensor([[3., 1, 0, 2], [0., 2, 1, 3]])
    y = torch.tensor([0, 1])
    assert true_class_hits(scores, y, 1.0)[0].tolist() == [True, False]
    assert true_class_hits(scores, y, -1.0)[0].tolist() == [False, False]  # now class 2 and 0 are raised most
    assert true_class_hits(-scores, y, -1.0)[0].tolist() == [True, False]
