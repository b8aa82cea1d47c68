"""The decoded-crop cache of ImageNet evaluation (gattanet.data.decoded_cache) on a small ImageFolder tree of
real JPEG files: equal to the decoded float path, decoded once, resumable, content-keyed, noised as the
folder loader noises; and its params (data.imagenet.workers / eval_cache / cache_dir) through DataSource."""

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import Subset

import gattanet.data.decoded_cache as dc
from gattanet.data.datasets import imagenet_split, plain_transform
from gattanet.data.decoded_cache import CachedLoader, CacheError, DecodedCache, folder_and_indices
from gattanet.data.loader import Finish, FolderLoader
from pipeline.config import ParamsError, validate
from pipeline.profiles import compose
from tests.helpers import with_param

pytestmark = pytest.mark.usefixtures("one_thread")

# Measured: PIL's Resize/CenterCrop give uint8 images and ToTensor divides by 255, so the uint8 round
# trip is exact (0, bit-identical floats). A transform with other values is off by at most half a step.
BOUND = 0.0
HALF_STEP = 0.5 / 255 + 1e-7
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_tree(root: Path, classes=("ant", "bee", "cat"), per_class: int = 4, seed: int = 0) -> Path:
    """JPEG files of odd sizes, one folder per class (ImageFolder layout)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = rng.integers(23, 61, 2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.JPEG", quality=85)
    return root


def folder_at(root: Path, crop: int = 16, resize: int = 19):
    return imagenet_split(root, "val", plain_transform(crop_size=crop, resize_size=resize))


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path / "tree" / "val").parent


class Counting:
    """Counts the JPEG reads of an ImageFolder (its `loader`), or fails them."""

    def __init__(self, folder, fail: bool = False):
        self.calls, self.fail, self.inner = 0, fail, folder.loader
        folder.loader = self

    def __call__(self, path):
        self.calls += 1
        if self.fail:
            raise AssertionError(f"decoded {path} although it is cached")
        return self.inner(path)


def floats(folder, indices) -> torch.Tensor:
    return torch.stack([folder[i][0] for i in indices])


def cache_of(folder, root, **kw) -> DecodedCache:
    return DecodedCache(folder, root, log=None, **kw)


def test_cache_equals_the_decoded_float_path(tree, tmp_path):
    folder = folder_at(tree)
    images = cache_of(folder, tmp_path / "cache", shard_size=5).images()
    x8, y = images.take(range(len(images)))
    assert x8.dtype == torch.uint8 and x8.shape == (12, 3, 16, 16)
    assert (x8.float() / 255 - floats(folder, range(12))).abs().max() <= BOUND
    assert torch.equal(x8.float().div(255), floats(folder, range(12)))  # bit-identical
    assert y.tolist() == folder.targets and images.max_abs_error == 0.0
    assert len(list((tmp_path / "cache").glob("*/*.npy"))) == 3  # 5 + 5 + 2


class _Dim:
    """A transform whose values are not multiples of 1/255 (a stable repr, so it can key a cache)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, img):
        return self.inner(img) * 0.7

    def __repr__(self):
        return f"_Dim({self.inner!r})"


def test_quantisation_is_bounded_by_half_a_step_and_recorded(tree, tmp_path):
    folder = imagenet_split(tree, "val", _Dim(plain_transform(crop_size=16, resize_size=19)))
    images = cache_of(folder, tmp_path / "cache").images()
    err = (images.take(range(12))[0].float() / 255 - floats(folder, range(12))).abs().max().item()
    assert 0 < err <= HALF_STEP and images.max_abs_error == pytest.approx(err, abs=1e-6)


def test_a_second_use_reads_the_cache_not_the_jpegs(tree, tmp_path):
    first = folder_at(tree)
    count = Counting(first)
    cache_of(first, tmp_path / "cache").images()
    assert count.calls == 12
    again = folder_at(tree)  # a new process: a new folder object, the same files
    Counting(again, fail=True)
    images = cache_of(again, tmp_path / "cache").images([7, 0, 3])
    assert torch.equal(images.take([0, 1, 2])[0].float() / 255, floats(first, [7, 0, 3]))


def test_a_subset_decodes_only_its_images_in_its_order(tree, tmp_path):
    folder = folder_at(tree)
    count = Counting(folder)
    cache = cache_of(folder, tmp_path / "cache")
    images = cache.images([9, 2, 5])
    assert count.calls == 3 and len(images) == 3 and images.targets == [folder.targets[i] for i in (9, 2, 5)]
    assert torch.equal(images.take([0, 1, 2])[0].float() / 255, floats(folder, [9, 2, 5]))
    count.calls = 0
    everything = cache.images()
    assert count.calls == 12 - 3  # the rest only
    assert torch.equal(everything.take(range(12))[0].float() / 255, floats(folder, range(12)))
    sub = Subset(Subset(folder, [4, 8, 11, 1]), [3, 1])  # nested subsets resolve to folder indices
    assert folder_and_indices(sub)[1].tolist() == [1, 8]


def test_a_killed_build_resumes_from_the_shards_there_are(tree, tmp_path):
    class Killed(Exception):
        pass

    def kill(_line):
        raise Killed

    folder = folder_at(tree)
    count = Counting(folder)
    with pytest.raises(Killed):  # stops right after the first shard is written
        DecodedCache(folder, tmp_path / "cache", shard_size=4, log=kill).images()
    path = DecodedCache(folder, tmp_path / "cache", log=None).path
    assert len(list(path.glob("0*.json"))) == 1  # whole shards, no temp files (the lock file stays)
    assert [p.name for p in path.glob(".*")] == [".lock"]
    (path / "99999999-half.npy").write_bytes(b"\x93NUMPY half written")  # a shard's images without its marker
    count.calls = 0
    lines = []
    images = DecodedCache(folder, tmp_path / "cache", shard_size=4, log=lines.append).images()
    assert count.calls == 12 - 4 and len(lines) == 2
    assert torch.equal(images.take(range(12))[0].float() / 255, floats(folder, range(12)))


class Slow:
    """An ImageFolder loader that takes its time, so that two processes surely overlap."""

    def __init__(self, folder):
        self.inner = folder.loader
        folder.loader = self

    def __call__(self, path):
        time.sleep(0.05)
        return self.inner(path)


def _build(folder, root, start, results):
    lines = []
    start.wait()
    images = DecodedCache(folder, root, shard_size=4, log=lines.append).images()
    results.put((len(lines), images.take(range(12))[0].numpy().tobytes()))


def test_processes_sharing_a_cache_decode_each_image_once(tree, tmp_path):
    """Two processes (two ranks, two queue workers) asking at the same moment: one decodes, the other
    waits on the lock and reads its shards."""
    folder = folder_at(tree)
    Slow(folder)
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build, args=(folder, tmp_path / "cache", start, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(n for n, _ in got) == [0, 3]  # 12 images in shards of 4, written by one process
    assert got[0][1] == got[1][1]


def test_a_complete_cache_is_read_without_the_lock(tree, tmp_path, monkeypatch):
    folder = folder_at(tree)
    built = cache_of(folder, tmp_path / "cache").images()
    (built_path := cache_of(folder, tmp_path / "cache").path / ".lock").unlink()

    def no_lock(self):
        raise AssertionError("took the lock although everything is cached")

    monkeypatch.setattr(DecodedCache, "_exclusive", no_lock)
    again = cache_of(folder, tmp_path / "cache").images([5, 0, 11])
    assert torch.equal(again.take(range(3))[0], built.take([5, 0, 11])[0])
    assert not built_path.exists()


def test_the_key_follows_files_transform_and_contents(tree, tmp_path):
    root = tmp_path / "cache"
    key = cache_of(folder_at(tree), root).key
    assert cache_of(folder_at(tree), root).key == key
    assert cache_of(folder_at(tree, crop=14), root).key != key  # another transform
    assert cache_of(folder_at(tree, resize=21), root).key != key
    folder = folder_at(tree)
    cache_of(folder, root, shard_size=4).images()  # shards: ant 0-3, bee 0-3, cat 0-3
    write_tree(tree / "val", classes=("bee",), per_class=5, seed=1)  # rewrites bee/0-3, adds bee/4.JPEG
    grown = folder_at(tree)
    assert cache_of(grown, root).key != key and len(grown) == 13
    # same file list, changed files: the shards holding them are voided and decoded again
    (tree / "val" / "bee" / "4.JPEG").unlink()
    changed = folder_at(tree)
    cache = cache_of(changed, root)
    assert cache.key == key
    count = Counting(changed)
    images = cache.images()
    assert count.calls == 4  # the bee shard only
    assert torch.equal(images.take(range(12))[0].float() / 255, floats(changed, range(12)))


@pytest.mark.parametrize("workers", [0, 1])
def test_noise_on_the_cached_loader_equals_the_folder_loader(tree, tmp_path, workers):
    folder = folder_at(tree)
    data = Subset(folder, [10, 3, 7, 0, 5, 11, 2])  # a seeded subset, as DataSource.loader(limit=...) makes
    cached = cache_of(folder, tmp_path / "cache").images(folder_and_indices(data)[1])
    for kw in ({}, {"sigma": 0.1, "noise_seed": 3}, {"sigma": 0.3, "noise_seed": 1, "clip": False},
               {"sigma": 0.05, "shuffle": True, "seed": 4}):
        order = {k: kw.pop(k) for k in ("shuffle", "seed") if k in kw}
        a = list(FolderLoader(data, 3, Finish(MEAN, STD, **kw), workers=0, **order).epoch(2))
        b = CachedLoader(cached, 3, Finish(MEAN, STD, **kw), workers=workers, **order)
        assert len(b) == 3 and b.num_samples == 7
        b = list(b.epoch(2))
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b)), kw


def test_errors_say_what_to_do(tree, tmp_path, monkeypatch):
    folder = folder_at(tree)
    monkeypatch.setattr(dc.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(CacheError, match=r"needs 0\.0 GB .* free; move it"):
        DecodedCache(folder, tmp_path / "cache", log=None, hint="move it").images()
    monkeypatch.undo()
    (tmp_path / "ro").write_text("a file where the cache folder should be")
    with pytest.raises(CacheError, match=r"cannot write the decoded cache in .*ro/.*; move it"):
        DecodedCache(folder, tmp_path / "ro", log=None, hint="move it").images()
    (tree / "val" / "cat" / "1.JPEG").write_bytes(b"\xff\xd8 not a JPEG")  # a bad image is not a cache error
    with pytest.raises(OSError, match="cannot identify image file") as e:
        cache_of(folder_at(tree), tmp_path / "cache").images()
    assert not isinstance(e.value, CacheError)
    with pytest.raises(ValueError, match="outside"):
        cache_of(imagenet_split(tree, "val", _Scale(plain_transform(crop_size=8, resize_size=9))),
                 tmp_path / "other").images([0])
    with pytest.raises(ValueError, match="object address"):
        cache_of(imagenet_split(tree, "val", lambda img: img), tmp_path / "other")
    with pytest.raises(TypeError, match="image folders"):
        folder_and_indices(torch.utils.data.TensorDataset(torch.zeros(2)))


class _Scale(_Dim):
    def __call__(self, img):
        return self.inner(img) - 0.5  # centred, not in [0, 1]


# ---------------------------------------------------------------- params and DataSource


def imagenet_params(root: Path, **data) -> dict:
    raw = compose("paper")
    raw["data"]["imagenet"].update(root=str(root), val_fraction=0.2, **data)
    return raw


def test_an_override_sets_an_optional_key_the_file_leaves_out(tmp_path):
    from pipeline.config import load_params

    raw = imagenet_params(tmp_path)
    for key in ("workers", "eval_cache", "cache_dir"):
        raw["data"]["imagenet"].pop(key, None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert load_params(tmp_path / "params.yaml").data["imagenet"].workers == 4  # the default
    p = load_params(tmp_path / "params.yaml", ["data.imagenet.workers=16", "data.imagenet.eval_cache=false"])
    assert p.data["imagenet"].workers == 16 and p.data["imagenet"].eval_cache is False
    with pytest.raises(ParamsError, match="data.imagenet.worker: unknown key; allowed: .*workers"):
        load_params(tmp_path / "params.yaml", ["data.imagenet.worker=16"])


@pytest.mark.parametrize("dotted, value, expect", [
    ("data.imagenet.workers", -1, "data.imagenet.workers: must be ≥ 0"),
    ("data.imagenet.workers", 2.5, "data.imagenet.workers: expected an integer"),
    ("data.imagenet.eval_cache", "yes", "data.imagenet.eval_cache: expected true or false"),
    ("data.imagenet.cache_dir", "", "data.imagenet.cache_dir: expected a non-empty string"),
    ("data.cifar10.workers", 2, "data.cifar10.workers: only an image-folder dataset (imagenet)"),
    ("data.cifar100.eval_cache", False, "data.cifar100.eval_cache: only an image-folder dataset"),
])
def test_bad_loader_params_name_the_key(tmp_path, dotted, value, expect):
    with pytest.raises(ParamsError) as e:
        validate(with_param(imagenet_params(tmp_path), dotted, value))
    assert expect in str(e.value)


def test_loader_params_default_where_left_out(tmp_path):
    raw = imagenet_params(tmp_path)
    for k in ("workers", "eval_cache", "cache_dir"):
        del raw["data"]["imagenet"][k]
    cfg = validate(raw).data["imagenet"]
    assert (cfg.workers, cfg.eval_cache, cfg.cache_dir) == (4, True, ".gattanet/cache")
    stated = validate(imagenet_params(tmp_path, workers=0, eval_cache=False, cache_dir="/tmp/c")).data["imagenet"]
    assert (stated.workers, stated.eval_cache, stated.cache_dir) == (0, False, "/tmp/c")


@pytest.fixture
def imagenet_source(tmp_path, monkeypatch):
    """DataSource over a tiny ImageNet tree (train/ and val/ with the same classes), its manifest
    written by the data stage's function, in a project folder of its own."""
    from pipeline.data_source import DataSource
    from pipeline.imagenet import write_manifest
    from pipeline.paths import data_path

    root = tmp_path / "imagenet"
    write_tree(root / "train", per_class=5)
    write_tree(root / "val", per_class=3, seed=1)
    monkeypatch.chdir(tmp_path)
    write_manifest(str(root), data_path("imagenet"))

    def make(**data):
        return DataSource(validate(imagenet_params(root, **data)), "imagenet", torch.device("cpu"))
    return make


def test_data_source_reads_imagenet_evaluation_from_the_cache(imagenet_source, tmp_path, monkeypatch):
    seen = []
    real = dc.DataLoader

    def spy(*args, num_workers=0, **kw):  # record the worker count, decode here (fast, deterministic)
        seen.append(num_workers)
        kw.pop("persistent_workers", None)
        return real(*args, num_workers=0, **kw)

    monkeypatch.setattr(dc, "DataLoader", spy)
    source = imagenet_source(workers=2, cache_dir=str(tmp_path / "cache"))
    plain = imagenet_source(workers=0, eval_cache=False)
    assert source._loader(source.splits["train"], 4).loader.num_workers == 2  # training: JPEGs, 2 workers
    kw = dict(sigma=0.1, noise_seed=0, clip=True, limit=5)
    cached = source.loader("test", 4, **kw)
    assert isinstance(cached, CachedLoader) and cached.num_samples == 5 and seen == [2, 2]  # decode, read
    assert isinstance(plain.loader("test", 4, **kw), FolderLoader)
    for split, kw in (("test", kw), ("test", {}), ("val", {"sigma": 0.05})):
        a, b = list(source.loader(split, 4, **kw).epoch(0)), list(plain.loader(split, 4, **kw).epoch(0))
        assert len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb)
                                        for (xa, ya), (xb, yb) in zip(a, b))
    held = sorted(i for m in (tmp_path / "cache").glob("*/0*.json") for i in yaml.safe_load(m.read_text())["indices"])
    assert len(held) == 9 + 3  # the test split (9 images: the 5 asked first, then the rest) + val (3 of 15)
    x, y, raw = source.batch("test", torch.tensor([8, 1]))
    x0, y0, raw0 = plain.batch("test", torch.tensor([8, 1]))
    assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(raw, raw0)
