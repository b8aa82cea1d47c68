"""Loaders (tensor and folder), batched augmentation and per-image reproducible noise."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gattanet.data.augment import Augment
from gattanet.data.datasets import TensorData, imagenet_split, plain_transform
from gattanet.data.loader import Finish, FolderLoader, TensorLoader
from gattanet.data.noise import add_noise, derive_seed, indexed_noise


def write_jpegs(root: Path, classes=("a", "b", "c"), per_class: int = 2) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (18, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")


def id_data(n: int = 11, channels: int = 2, side: int = 8) -> TensorData:
    """Random images whose label is their index, so a batch tells which images it holds."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, side, side), generator=g, dtype=torch.uint8)
    return TensorData(images, torch.arange(n), (0.4,) * channels, (0.2,) * channels,
                      tuple(str(i) for i in range(n)))


def collect(loader, e: int = 0):
    xs, ys = zip(*loader.epoch(e))
    return torch.cat(xs), torch.cat(ys)


def test_tensor_loader_normalises_in_order():
    data = id_data()
    loader = TensorLoader(data, 4)
    assert len(loader) == 3 and loader.num_samples == 11
    assert [len(y) for _, y in loader.epoch(0)] == [4, 4, 3]
    x, y = collect(loader)
    assert torch.equal(y, torch.arange(11))
    assert torch.allclose(x, (data.images.float() / 255 - 0.4) / 0.2, atol=1e-6)


def test_tensor_loader_shuffle_depends_on_seed_and_epoch_only():
    data = id_data()
    a = TensorLoader(data, 3, shuffle=True, seed=5)
    _, y0 = collect(a, 0)
    assert sorted(y0.tolist()) == list(range(11)) and not torch.equal(y0, torch.arange(11))
    assert not torch.equal(collect(a, 1)[1], y0)
    resumed = TensorLoader(data, 3, shuffle=True, seed=5)  # a fresh loader (a resumed run)
    assert torch.equal(collect(resumed, 1)[1], collect(a, 1)[1])
    assert not torch.equal(collect(TensorLoader(data, 3, shuffle=True, seed=6), 0)[1], y0)


def test_tensor_loader_augmentation_is_seeded():
    data = id_data(side=16)
    make = lambda seed: TensorLoader(data, 4, shuffle=True, seed=seed, augment=Augment())  # noqa: E731
    x1, y1 = collect(make(1), 2)
    x2, y2 = collect(make(1), 2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    plain = TensorLoader(data, 4)
    assert not torch.allclose(x1, collect(plain)[0][y1])  # augmented
    assert not torch.equal(collect(make(1), 3)[0], x1)


def test_augment_keeps_shape_dtype_and_is_seeded():
    x = torch.rand(6, 3, 16, 16)
    aug = Augment()
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, aug(x, torch.Generator().manual_seed(1)))
    assert 0 <= out.min() and out.max() <= 1  # bilinear + zero fill stays in range
    assert torch.equal(Augment(0, 0, False)(x, torch.Generator()), x)


def test_augment_flip_only_flips_each_image_or_not():
    x = torch.rand(32, 1, 8, 8)
    out = Augment(rotation=0, shift=0, hflip=True)(x, torch.Generator().manual_seed(0))
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    flipped = (out - x.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert torch.all(same ^ flipped) and same.any() and flipped.any()


def test_augment_shift_moves_content_within_bounds():
    x = torch.zeros(64, 1, 20, 20)
    x[:, :, 10, 10] = 1.0
    out = Augment(rotation=0, shift=0.2, hflip=False)(x, torch.Generator().manual_seed(0))
    rows = (out[:, 0] * torch.arange(20.0)[:, None]).sum((1, 2)) / out[:, 0].sum((1, 2))
    assert (rows - 10).abs().max() <= 0.2 * 20 + 0.5 and (rows - 10).abs().max() > 1


def test_augment_rotation_keeps_the_centre_and_rejects_bad_args():
    x = torch.zeros(16, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    out = Augment(rotation=20, shift=0, hflip=False)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, 0, 10, 10], torch.ones(16), atol=1e-4)  # rotation about the centre
    with pytest.raises(ValueError, match="rotation"):
        Augment(rotation=-1)
    with pytest.raises(ValueError, match="shift"):
        Augment(shift=1.5)
    with pytest.raises(ValueError, match="float batch"):
        Augment()(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.Generator())


def test_augment_rotates_in_pixel_space_on_non_square_images():
    x = torch.zeros(32, 1, 21, 41)
    x[:, :, 10, 28] = 1.0  # 8 pixels right of the centre (10, 20)
    out = Augment(rotation=180, shift=0, hflip=False)(x, torch.Generator().manual_seed(0))[:, 0]
    rows, cols = torch.meshgrid(torch.arange(21.0), torch.arange(41.0), indexing="ij")
    mass = out.sum((1, 2))
    dy, dx = (out * rows).sum((1, 2)) / mass - 10, (out * cols).sum((1, 2)) / mass - 20
    assert torch.allclose(torch.hypot(dx, dy), torch.full((32,), 8.0), atol=0.5)  # a circle, not an ellipse
    assert dy.abs().max() > 6  # and it did rotate far


def test_indexed_noise_depends_only_on_seed_and_index():
    a = indexed_noise(torch.tensor([3, 5, 7]), (2, 4, 4), noise_seed=1)
    b = indexed_noise(torch.tensor([7, 3]), (2, 4, 4), noise_seed=1)
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[1])
    assert not torch.equal(a, indexed_noise(torch.tensor([3, 5, 7]), (2, 4, 4), noise_seed=2))
    assert abs(float(indexed_noise(torch.arange(50), (100,), 0).std()) - 1) < 0.05
    with pytest.raises(ValueError, match=r"\[0, 2\*\*32\)"):
        indexed_noise(torch.tensor([-1]), (1,), 0)
    assert derive_seed(0, 1) != derive_seed(1, 0)


def test_add_noise_sigma_clip_and_errors():
    x = torch.rand(4, 1, 5, 5)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    clipped = add_noise(x, 0.5, noise)
    assert 0 <= clipped.min() and clipped.max() <= 1
    assert torch.allclose(add_noise(x, 0.5, noise, clip=False), x + 0.5 * noise)
    assert torch.equal(add_noise(x, 0.0, noise), x)
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    assert torch.equal(add_noise(x, 0.1, g(), clip=False), add_noise(x, 0.1, g(), clip=False))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        add_noise(x, -0.1, noise)
    with pytest.raises(ValueError, match="noise shape"):
        add_noise(x, 0.1, noise[:2])
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        Finish((0.4,), (0.2,), sigma=-1)


def test_loader_noise_is_batch_size_and_order_independent():
    data = id_data()
    noisy = lambda **kw: Finish(data.mean, data.std, **({"sigma": 0.3, "noise_seed": 4} | kw))  # noqa: E731
    x2, _ = collect(TensorLoader(data, 2, noisy()))
    x5, _ = collect(TensorLoader(data, 5, noisy()))
    assert torch.equal(x2, x5)
    xs, ys = collect(TensorLoader(data, 3, noisy(), shuffle=True, seed=1))
    assert torch.equal(xs, x2[ys])
    clean, _ = collect(TensorLoader(data, 5))
    assert not torch.allclose(clean, x2)
    assert not torch.equal(collect(TensorLoader(data, 5, noisy(noise_seed=5)))[0], x2)
    x01 = x2 * 0.2 + 0.4
    assert x01.min() >= -1e-6 and x01.max() <= 1 + 1e-6  # clipped before normalising
    unclipped = collect(TensorLoader(data, 5, noisy(clip=False)))[0] * 0.2 + 0.4
    assert unclipped.min() < -0.01 or unclipped.max() > 1.01


def test_channels_last_and_validation():
    data = id_data()
    x, _ = next(iter(TensorLoader(data, 4, Finish(data.mean, data.std, channels_last=True)).epoch(0)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(id_data(), 0)


@pytest.mark.parametrize("workers", [0, 1])
def test_folder_loader_reads_jpegs_with_noise_and_shuffle(tmp_path, workers):
    write_jpegs(tmp_path / "val")
    folder = imagenet_split(tmp_path, "val", plain_transform(crop_size=12, resize_size=14))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    plain = FolderLoader(folder, 4, Finish(mean, std), workers=workers)
    assert len(plain) == 2 and plain.num_samples == 6
    x, y = collect(plain)
    assert x.shape == (6, 3, 12, 12) and y.tolist() == [0, 0, 1, 1, 2, 2]
    expected = (torch.stack([folder[i][0] for i in range(6)]) - torch.tensor(mean)[:, None, None]) \
        / torch.tensor(std)[:, None, None]
    assert torch.allclose(x, expected, atol=1e-5)

    noisy = lambda bs, **kw: FolderLoader(folder, bs, Finish(mean, std, sigma=0.2, noise_seed=3),  # noqa: E731
                                          workers=workers, **kw)
    n4, _ = collect(noisy(4))
    assert torch.equal(n4, collect(noisy(5))[0]) and not torch.allclose(n4, x)
    xs, ys = collect(noisy(4, shuffle=True, seed=2), 1)
    match = [[torch.equal(a, b) for b in n4] for a in xs]  # the same noisy image, wherever it lands
    assert all(sum(row) == 1 for row in match) and sorted(ys.tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(ys, collect(noisy(4, shuffle=True, seed=2), 1)[1])
    assert [row.index(True) for row in match] != list(range(6))
