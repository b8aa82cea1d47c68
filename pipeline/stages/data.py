"""data@NAME: materialise a small dataset once as uint8 tensors with a content hash (data/NAME.pt)."""

from gattanet.data.datasets import load_raw, save_tensors
from pipeline.config import entry
from pipeline.paths import data_path


def work(params, key: str) -> list:
    """No model passes: the dataset's images are read and stored."""
    from pipeline.work import dataset_sizes, no_model, num

    s = dataset_sizes(params, key)
    return no_model("data", key, f"{num(s.train + s.val)} + {num(s.test)} images (no model)")


def run(params, key: str) -> None:
    cfg = entry(params.data, key, "data")
    if key == "imagenet":
        from pipeline.imagenet import write_manifest

        write_manifest(cfg.root, data_path(key))
        return
    splits = load_raw(key, cfg.root)
    save_tensors(data_path(key), splits, key)
    print(f"{key}: {len(splits['train'])} train, {len(splits['test'])} test images -> {data_path(key)}")
