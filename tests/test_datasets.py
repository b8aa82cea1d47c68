"""Dataset readers on small files written in the real on-disk formats; materialised tensors."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gattanet.data import datasets as ds
from gattanet.data.datasets import (DatasetError, TensorData, imagenet_split, load_raw, load_tensors,
                               save_tensors, split_train_val, transform_from_weights)
from gattanet.data.specs import FASHION_CLASSES


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        arrays[prefix] = (images, labels)
    return arrays


def numpy_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = images.astype(np.float64) / 255
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_reads_idx_pads_to_32_and_computes_stats(tmp_path, gz):
    arrays = write_fashion(tmp_path, gz=gz)
    splits = load_raw("fashion-mnist", tmp_path)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[prefix]
        data = splits[split]
        assert data.images.dtype == torch.uint8 and data.images.shape == (len(images), 1, 32, 32)
        assert torch.equal(data.images[:, 0, 2:30, 2:30], torch.from_numpy(images))
        assert data.images[:, :, :2].sum() == 0 and data.images[:, :, :, 30:].sum() == 0
        assert torch.equal(data.labels, torch.from_numpy(labels.astype(np.int64)))
        assert data.classes == FASHION_CLASSES
    mean, std = numpy_stats(splits["train"].images.numpy())
    assert splits["train"].mean == pytest.approx(mean.tolist()) and splits["train"].std == pytest.approx(std.tolist())
    assert splits["test"].mean == splits["train"].mean  # test normalised with training statistics


def test_fashion_missing_file_names_it_and_says_how_to_get_it(tmp_path):
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz.*apt-get install dataset-fashion-mnist"):
        load_raw("fashion-mnist", tmp_path)


def test_fashion_truncated_files_are_named(tmp_path):
    write_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])  # cut gzip stream
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz.*truncated"):
        load_raw("fashion-mnist", tmp_path)
    raw = gzip.decompress(gzip.compress(idx_bytes(np.zeros((6, 28, 28), np.uint8))))
    path.write_bytes(gzip.compress(raw[:-100]))  # complete gzip, short IDX payload
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz: truncated or corrupt.*\(6, 28, 28\)"):
        load_raw("fashion-mnist", tmp_path)


def test_fashion_bad_magic_and_count_mismatch(tmp_path):
    write_fashion(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + bytes(8)))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz: not an unsigned-byte IDX"):
        load_raw("fashion-mnist", tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(DatasetError, match="6 images but .* 5 labels"):
        load_raw("fashion-mnist", tmp_path)


def test_download_uses_torchvision_layout(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeFashion:  # what torchvision leaves behind: FashionMNIST/raw/*-ubyte(.gz)
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "FashionMNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            write_fashion(raw, gz=False)

    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashion)
    with pytest.raises(DatasetError):
        load_raw("fashion-mnist", tmp_path)  # no download asked: nothing fetched
    assert calls == []
    splits = load_raw("fashion-mnist", tmp_path, download=True)
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert len(splits["train"]) == 6 and len(splits["test"]) == 4


def test_download_failure_is_a_dataset_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(root, train, download):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(DatasetError, match="downloading cifar10 .* failed .*network unreachable"):
        load_raw("cifar10", tmp_path, download=True)


def cifar_batch(rng, n, label_key, num_classes):
    return {"batch_label": "x", label_key: rng.integers(0, num_classes, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}


def write_cifar10(root: Path, per_batch: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = cifar_batch(rng, per_batch, "labels", 10)
        (base / name).write_bytes(pickle.dumps(batches[name]))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)],
                                                      "num_cases_per_batch": per_batch}))
    return batches


def test_cifar10_reads_pickled_batches(tmp_path):
    batches = write_cifar10(tmp_path)
    splits = load_raw("cifar10", tmp_path)
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    first = batches["data_batch_1"]["data"][0]  # rows hold R, G, B planes of 1024 pixels
    assert torch.equal(train.images[0, 1].flatten(), torch.from_numpy(first[1024:2048]))
    labels = sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert train.labels.tolist() == labels and test.labels.tolist() == batches["test_batch"]["labels"]
    assert train.classes == tuple(f"c{i}" for i in range(10))
    mean, std = numpy_stats(train.images.numpy())
    assert train.mean == pytest.approx(mean.tolist()) and test.std == pytest.approx(std.tolist())
    assert len(load_raw("cifar10", tmp_path / "cifar-10-batches-py")["train"]) == 10  # the folder itself


def test_cifar100_reads_fine_labels_and_class_names(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    train, test = cifar_batch(rng, 5, "fine_labels", 100), cifar_batch(rng, 3, "fine_labels", 100)
    train["coarse_labels"] = [0] * 5
    (base / "train").write_bytes(pickle.dumps(train))
    (base / "test").write_bytes(pickle.dumps(test))
    names = [f"fine{i}" for i in range(100)]
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["a"] * 20}))
    splits = load_raw("cifar100", tmp_path)
    assert splits["train"].labels.tolist() == train["fine_labels"]
    assert splits["test"].images.shape == (3, 3, 32, 32)
    assert splits["train"].classes == tuple(names)


def test_cifar_missing_truncated_and_unsafe_files(tmp_path):
    write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    (base / "test_batch").unlink()
    with pytest.raises(DatasetError, match=r"not found: .*test_batch.*cs\.toronto\.edu"):
        load_raw("cifar10", tmp_path)
    batch = base / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DatasetError, match="data_batch_3: cannot unpickle .*truncated"):
        load_raw("cifar10", tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    batch.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DatasetError, match="data_batch_3: cannot unpickle .*refusing to load builtins.print"):
        load_raw("cifar10", tmp_path)


def test_unknown_dataset_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="allowed: fashion-mnist, cifar10, cifar100"):
        load_raw("mnist", tmp_path)


def small_data(n: int = 10, channels: int = 3, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 4, (n,), generator=g)
    return TensorData(images, labels, (0.5,) * channels, (0.25,) * channels, ("a", "b", "c", "d"))


def test_tensordata_validates_and_subsets():
    data = small_data()
    sub = data.subset([3, 1])
    assert len(sub) == 2 and torch.equal(sub.images[0], data.images[3]) and sub.labels[1] == data.labels[1]
    assert sub.mean == data.mean and sub.classes == data.classes
    with pytest.raises(ValueError, match="uint8"):
        TensorData(data.images.float(), data.labels, data.mean, data.std, data.classes)
    with pytest.raises(ValueError, match="one value per channel"):
        TensorData(data.images, data.labels, (0.5,), (0.2,), data.classes)
    with pytest.raises(ValueError, match="labels must lie in"):
        TensorData(data.images, data.labels + 10, data.mean, data.std, data.classes)


def test_save_and_load_tensors_roundtrip_and_corruption(tmp_path):
    splits = {"train": small_data(10), "test": small_data(4, seed=1)}
    path = tmp_path / "data" / "toy.pt"
    digest = save_tensors(path, splits, "toy")
    loaded = load_tensors(path)
    assert loaded["meta"] == {"name": "toy", "classes": list(splits["train"].classes),
                              "mean": list(splits["train"].mean), "std": list(splits["train"].std),
                              "sha256": digest}
    for split in ("train", "test"):
        assert torch.equal(loaded[split].images, splits[split].images)
        assert torch.equal(loaded[split].labels, splits[split].labels)
    assert [p.name for p in path.parent.iterdir()] == ["toy.pt"]  # no temp file left
    assert save_tensors(tmp_path / "again.pt", splits, "toy") == digest  # content hash, not file hash

    payload = torch.load(path, weights_only=True)
    payload["train"]["labels"][0] = (payload["train"]["labels"][0] + 1) % 4
    torch.save(payload, path)
    with pytest.raises(DatasetError, match="toy.pt: content does not match its sha256"):
        load_tensors(path)
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="toy.pt: corrupt or not a gattanet data file"):
        load_tensors(path)
    with pytest.raises(DatasetError, match="not found: .*missing.pt"):
        load_tensors(tmp_path / "missing.pt")


def test_split_train_val_is_disjoint_complete_and_seeded():
    data = small_data(20)
    data.labels = torch.arange(20) % 4
    data.images[:, 0, 0, 0] = torch.arange(20, dtype=torch.uint8)  # an id per image
    train, val = split_train_val(data, 0.25, seed=3)
    ids = lambda d: set(d.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert len(val) == 5 and len(train) == 15
    assert ids(train) | ids(val) == set(range(20)) and not ids(train) & ids(val)
    assert ids(split_train_val(data, 0.25, seed=3)[1]) == ids(val)
    assert any(ids(split_train_val(data, 0.25, seed=s)[1]) != ids(val) for s in range(4, 8))
    assert val.mean == data.mean
    with pytest.raises(ValueError, match=r"val_fraction must lie in \(0, 1\)"):
        split_train_val(data, 1.0, 0)


def write_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, size=(40, 30)) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.JPEG", quality=90)


def test_imagenet_split_reads_an_image_folder(tmp_path):
    write_image_folder(tmp_path / "val")
    transform = ds.plain_transform(crop_size=16, resize_size=20)
    folder = imagenet_split(tmp_path, "val", transform)
    assert folder.classes == ["cat", "dog"] and len(folder) == 6
    x, y = folder[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y == 1
    with pytest.raises(DatasetError, match=r"ImageNet folder not found: .*train.*image-net.org"):
        imagenet_split(tmp_path, "train", transform)
    (tmp_path / "train" / "empty_class").mkdir(parents=True)
    with pytest.raises(DatasetError, match="train"):
        imagenet_split(tmp_path, "train", transform)
    with pytest.raises(ValueError, match="allowed: train, val"):
        imagenet_split(tmp_path, "test", transform)


def test_transform_from_weights_drops_normalisation():
    from torchvision.models import ResNet18_Weights

    transform, mean, std = transform_from_weights(ResNet18_Weights.IMAGENET1K_V1)
    assert mean == (0.485, 0.456, 0.406) and std == (0.229, 0.224, 0.225)
    x = transform(Image.new("RGB", (300, 260), (255, 0, 128)))
    assert x.shape == (3, 224, 224)
    assert torch.allclose(x[:, 100, 100], torch.tensor([1.0, 0.0, 128 / 255]))  # not normalised
