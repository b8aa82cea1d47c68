"""Cluttered, translated Fashion-MNIST (gattanet.data.clutter, issue 37 item 1): determinism pinned by hash,
the label is the placed item's, fragments come from other items of the same split, the item lies inside the
canvas, the data stage's file holds the generator's bytes, bad settings refused, the toy's parameter count."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from gattanet.data.clutter import (ClutterSettings, area_weights, cluttered_fashion, draws, generate,
                                   resize_area, uniform)
from gattanet.data.datasets import DEFAULT_ROOTS, load_tensors, read_fashion_split
from pipeline.cli import app
from pipeline.config import ParamsError, validate
from tests.helpers import write_fashion_mnist, write_idx

runner = CliRunner()
SMALL = ClutterSettings(canvas=32, item_size=20, fragments=4, fragment_size=8, seed=7)
PINNED_SMALL = "9bbe05631681c89a97eac93f77332ba8f0c18c7c5652ebd10e94d2ad87b437cf"  # SMALL on synthetic_items()
# the default settings on Debian's files: train and test images and labels
PINNED_REAL = "ec976a2dcb1c0b705980878dce0f6774b229b7293acecd2f01231a281b32c751"


def synthetic_items(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Items with a pattern of their own (no RNG, so the pinned hash rests on the generator alone)."""
    i = np.arange(n)[:, None, None]
    r, c = np.arange(28)[None, :, None], np.arange(28)[None, None, :]
    items = ((i * 37 + r * 11 + c * 5 + (r * c) % 7 * 9) % 256).astype(np.uint8)
    return items, (np.arange(n) % 10).astype(np.int64)


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- the generator


def test_settings_have_defaults_and_name_the_bad_one():
    assert ClutterSettings().as_dict() == {"canvas": 32, "item_size": 20, "fragments": 4, "fragment_size": 8, "seed": 0}
    for bad, words in (({"canvas": 0}, "canvas: must lie in [1, 128]"),
                       ({"item_size": 33}, "item_size: must lie in [1, 32]"),
                       ({"fragment_size": 21}, "fragment_size: must lie in [1, 20]"),
                       ({"fragments": -1}, "fragments: must lie in [0, 64]"), ({"seed": 2 ** 32}, "seed: must lie"),
                       ({"fragments": 2.0}, "fragments: expected an integer"), ({"canvas": True}, "canvas: expected")):
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            ClutterSettings(**bad)


def test_area_resampling_is_exact_integer_averaging():
    assert (area_weights(28, 20).sum(axis=1) == 28).all() and (area_weights(28, 20).sum(axis=0) == 20).all()
    items, _ = synthetic_items(6)
    half = resize_area(items, 14)  # 2x2 blocks: their mean, rounded half up
    blocks = items.reshape(6, 14, 2, 14, 2).astype(np.int64).sum(axis=(2, 4))
    assert (half == (blocks + 2) // 4).all()
    flat = np.full((2, 28, 28), 173, np.uint8)
    assert (resize_area(flat, 20) == 173).all() and (resize_area(flat, 9) == 173).all()
    assert (resize_area(items, 28) == items).all()


def test_uniform_integers_are_floor_of_raw_times_bound_over_2_64():
    raw = np.random.PCG64(3).random_raw(2000)
    for bound in (1, 2, 13, 59_999, 2 ** 32 - 1):
        got = uniform(raw, bound)
        assert got.tolist() == [(int(r) * bound) >> 64 for r in raw]
        assert got.min() >= 0 and got.max() < bound


def test_generation_is_deterministic_and_pinned():
    items, labels = synthetic_items()
    a, b = generate(items, labels, SMALL, "test"), generate(items, labels, SMALL, "test")
    fields = ("images", "labels", "item_at", "sources", "cuts", "fragment_at")
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)
    assert digest(a.images, a.labels) == PINNED_SMALL, digest(a.images, a.labels)
    assert digest(generate(items, labels, SMALL, "train").images) != digest(a.images)  # a stream per split
    other = ClutterSettings(**{**SMALL.as_dict(), "seed": 8})
    assert digest(generate(items, labels, other, "test").images) != digest(a.images)
    assert draws(7, "test", 3, 1).dtype == np.uint64


def test_label_is_the_placed_items_and_it_lies_inside_the_canvas():
    items, labels = synthetic_items()
    c = generate(items, labels, SMALL, "train")
    assert c.images.shape == (40, 1, 32, 32) and c.images.dtype == np.uint8
    assert (c.labels == labels).all()  # canvas i holds item i, with its label
    s = SMALL.item_size
    assert (c.item_at >= 0).all() and (c.item_at + s <= SMALL.canvas).all()
    scaled = resize_area(items, s)
    for i, (y, x) in enumerate(c.item_at):
        assert (c.images[i, 0, y:y + s, x:x + s] >= scaled[i]).all()  # the item, under max-composited clutter
    bare = generate(items, labels, ClutterSettings(fragments=0, item_size=16), "train")
    for i, (y, x) in enumerate(bare.item_at):  # no clutter: the item alone, exactly where recorded
        expected = np.zeros((32, 32), np.uint8)
        expected[y:y + 16, x:x + 16] = resize_area(items[i:i + 1], 16)[0]
        assert (bare.images[i, 0] == expected).all()
    assert len(set(map(tuple, c.item_at))) > 10  # translated: positions vary


def test_fragments_are_cut_from_other_items_of_the_split():
    items, labels = synthetic_items()
    c = generate(items, labels, SMALL, "test")
    f, s = SMALL.fragment_size, SMALL.item_size
    assert c.sources.shape == (40, 4) and ((c.sources >= 0) & (c.sources < 40)).all()
    assert (c.sources != np.arange(40)[:, None]).all()  # never the placed item itself
    assert len(np.unique(c.sources)) > 20
    assert ((c.cuts >= 0) & (c.cuts + f <= s)).all() and ((c.fragment_at >= 0) & (c.fragment_at + f <= 32)).all()
    scaled = resize_area(items, s)
    for i in range(40):
        for k in range(4):
            (cy, cx), (y, x) = c.cuts[i, k], c.fragment_at[i, k]
            assert (c.images[i, 0, y:y + f, x:x + f] >= scaled[c.sources[i, k], cy:cy + f, cx:cx + f]).all()
    with pytest.raises(ValueError, match="other items of the split, but it holds 1"):
        generate(items[:1], labels[:1], SMALL, "test")


def test_no_pixel_of_one_split_reaches_the_other(tmp_path):
    """Flat items, a grey level per split: a train canvas holds only train levels, a test canvas test levels."""
    levels = {"train": (40, 80), "t10k": (160, 240)}
    for prefix, (lo, hi) in levels.items():
        n = 60 if prefix == "train" else 30
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
                  np.repeat(np.where(np.arange(n) % 2, hi, lo).astype(np.uint8), 28 * 28).reshape(n, 28, 28))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    splits = cluttered_fashion(tmp_path, ClutterSettings(fragments=6))
    assert set(np.unique(splits["train"].images.numpy())) == {0, 40, 80}
    assert set(np.unique(splits["test"].images.numpy())) == {0, 160, 240}
    assert len(splits["train"]) == 60 and len(splits["test"]) == 30


@pytest.mark.skipif(not (DEFAULT_ROOTS["fashion-mnist"] / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_real_dataset_has_its_pinned_bytes():
    """The default settings on Debian's Fashion-MNIST (≈3 s): the same bytes on every machine."""
    splits = cluttered_fashion(DEFAULT_ROOTS["fashion-mnist"], ClutterSettings())
    got = digest(*(getattr(splits[s], a).numpy() for s in ("train", "test") for a in ("images", "labels")))
    assert got == PINNED_REAL, got
    assert tuple(splits["train"].images.shape) == (60_000, 1, 32, 32)


# ---------------------------------------------------------------- the pipeline


def clutter_params(tiny_params: dict, root: Path, clutter: dict | None = None) -> dict:
    """The tiny profile with a fashion-clutter dataset beside Fashion-MNIST (no run uses it)."""
    params = dict(tiny_params, data=dict(tiny_params["data"]))
    params["data"]["fashion-mnist"] = dict(params["data"]["fashion-mnist"], root=str(root))
    params["data"]["fashion-clutter"] = {"root": str(root), "val_fraction": 0.1,
                                         "clutter": clutter if clutter is not None else {"fragments": 3, "seed": 1}}
    return params


def stage(where: Path, params: dict, *args: str):
    (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return runner.invoke(app, ["stage", *args])


def test_the_data_stage_stores_the_generators_bytes(tmp_path, monkeypatch, tiny_params):
    from pipeline.data_source import load_splits

    root = write_fashion_mnist(tmp_path / "fm", 120, 50)
    params = clutter_params(tiny_params, root)
    monkeypatch.chdir(tmp_path)
    r = stage(tmp_path, params, "data", "fashion-clutter")
    assert r.exit_code == 0, r.output
    settings = ClutterSettings(fragments=3, seed=1)
    made = {s: generate(*read_fashion_split(root, s), settings, s) for s in ("train", "test")}
    stored = load_tensors(tmp_path / "data/fashion-clutter.pt")
    assert stored["meta"]["source"] == {"clutter": settings.as_dict()}
    for s in ("train", "test"):
        assert np.array_equal(stored[s].images.numpy(), made[s].images)
        assert np.array_equal(stored[s].labels.numpy(), made[s].labels)
    p = validate(params)
    loaded = load_splits(p, "fashion-clutter")  # what every stage reads: val carved from train as for fashion-mnist
    assert (len(loaded["train"]), len(loaded["val"]), len(loaded["test"])) == (108, 12, 50)
    images = torch.cat([loaded["train"].images, loaded["val"].images])
    assert sorted(map(bytes, images.numpy())) == sorted(map(bytes, made["train"].images))
    assert torch.equal(loaded["test"].images, torch.from_numpy(made["test"].images))
    assert stage(tmp_path, params, "validate").exit_code == 0


@pytest.mark.parametrize("dotted, value, words", [
    ("clutter.fragment_size", 24, "data.fashion-clutter.clutter.fragment_size: must lie in [1, 20]"),
    ("clutter.item_size", 40, "data.fashion-clutter.clutter.item_size: must lie in [1, 32]"),
    ("clutter.fragments", -2, "data.fashion-clutter.clutter.fragments: must lie in [0, 64]"),
    ("clutter.fragments", "many", "data.fashion-clutter.clutter.fragments: expected an integer"),
    ("clutter.canvas", 48, "data.fashion-clutter.clutter.canvas: 48 is not allowed; allowed: 32"),
    ("clutter.scale", 0.5, "data.fashion-clutter.clutter.scale: unknown key; allowed: canvas, item_size"),
])
def test_bad_settings_are_refused_in_one_line_and_write_nothing(tmp_path, monkeypatch, tiny_params, dotted, value,
                                                                words):
    root = write_fashion_mnist(tmp_path / "fm", 30, 20)
    params = clutter_params(tiny_params, root)
    monkeypatch.chdir(tmp_path)
    assert stage(tmp_path, params, "data", "fashion-clutter").exit_code == 0
    before = (tmp_path / "data/fashion-clutter.pt").read_bytes()
    params["data"]["fashion-clutter"]["clutter"][dotted.split(".")[1]] = value
    for args in (("data", "fashion-clutter"), ("validate",)):
        r = stage(tmp_path, params, *args)
        assert r.exit_code == 2 and words in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert (tmp_path / "data/fashion-clutter.pt").read_bytes() == before and not (tmp_path / "results").exists()


def test_clutter_belongs_to_the_generated_set_alone(tiny_params, tmp_path):
    params = clutter_params(tiny_params, tmp_path)
    params["data"]["fashion-mnist"]["clutter"] = {"fragments": 2}
    with pytest.raises(ParamsError, match="data.fashion-mnist.clutter: only fashion-clutter is generated"):
        validate(params)
    params = clutter_params(tiny_params, tmp_path, clutter={})
    assert validate(params).data["fashion-clutter"].clutter == ClutterSettings()  # every key has its default
    del params["data"]["fashion-clutter"]["clutter"]
    assert validate(params).data["fashion-clutter"].clutter is None  # the data stage then uses the defaults


def test_validate_refuses_a_file_made_with_other_settings(tmp_path, monkeypatch, tiny_params):
    """DVC tracks data.KEY.root alone: a setting changed after the file was made is caught, the file kept."""
    root = write_fashion_mnist(tmp_path / "fm", 30, 20)
    params = clutter_params(tiny_params, root)
    monkeypatch.chdir(tmp_path)
    assert stage(tmp_path, params, "data", "fashion-clutter").exit_code == 0
    before = (tmp_path / "data/fashion-clutter.pt").read_bytes()
    params["data"]["fashion-clutter"]["clutter"]["fragments"] = 5
    r = stage(tmp_path, params, "validate")
    assert r.exit_code == 2 and "data.fashion-clutter.clutter: data/fashion-clutter.pt was generated with" in r.output
    assert "delete data/fashion-clutter.pt" in r.output
    assert (tmp_path / "data/fashion-clutter.pt").read_bytes() == before
    assert stage(tmp_path, params, "data", "fashion-clutter").exit_code == 0  # regenerating it settles it
    assert stage(tmp_path, params, "validate").exit_code == 0


def test_plan_counts_the_standard_sizes_and_the_toy_keeps_its_parameter_count(tmp_path, monkeypatch, tiny_params):
    from gattanet.data.specs import get_spec
    from gattanet.models.registry import build_backbone
    from pipeline.work import dataset_sizes

    spec = get_spec("fashion-clutter")
    toy = build_backbone("toy", spec.num_classes, spec.channels, input_size=spec.size)
    assert sum(p.numel() for p in toy.parameters()) == 619_786  # the 32x32 canvas keeps the toy as it is
    r = runner.invoke(app, ["describe", "--backbone", "toy", "--dataset", "fashion-clutter", "--json"])
    assert r.exit_code == 0 and '"backbone_params": 619786' in r.output
    monkeypatch.chdir(tmp_path)  # no data/ here: the standard sizes
    sizes = dataset_sizes(validate(clutter_params(tiny_params, tmp_path)), "fashion-clutter")
    assert (sizes.train, sizes.val, sizes.test) == (54_000, 6_000, 10_000)


def test_the_clutter_profile_reports_a_new_experiment_with_its_generator_settings():
    """The report's dataset line for the clutter profile: a new experiment, the chosen settings listed beside it, and
    not Fashion-MNIST's stand-in-for-CIFAR line."""
    from pipeline.profiles import compose
    from pipeline.report.load import load_paper
    from pipeline.report.tables import deviations

    params = validate(compose("clutter"))
    rows = [d for d in deviations(load_paper(), params) if d["topic"] == "Dataset"]
    assert len(rows) == 1 and rows[0]["here"].startswith("A new experiment, not a reproduction")
    assert rows[0]["new_experiment"]  # the report's lead and Table 1 follow it (test_clutter_agreement)
    settings = compose("clutter")["data"]["fashion-clutter"]["clutter"]
    assert rows[0]["params"] == f"data.fashion-clutter.clutter = {settings}"
    default = [d for d in deviations(load_paper(), validate(compose("default"))) if d["topic"] == "Dataset"]
    assert len(default) == 1 and default[0]["here"].startswith("Fashion-MNIST") and not default[0]["new_experiment"]
