"""data@NAME: materialise a small dataset once as uint8 tensors with a content hash (data/NAME.pt); the
cluttered set (fashion-clutter) is generated here from Fashion-MNIST's files."""

from gattanet.data.datasets import load_raw, save_tensors
from pipeline.config import entry
from pipeline.paths import data_path


def work(params, key: str) -> list:
    """No model passes: the dataset's images are read (or generated) and stored."""
    from pipeline.work import dataset_sizes, no_model, num

    s = dataset_sizes(params, key)
    return no_model("data", key, f"{num(s.train + s.val)} + {num(s.test)} images (no model)")


def run(params, key: str) -> None:
    cfg = entry(params.data, key, "data")
    if key == "imagenet":
        from pipeline.imagenet import write_manifest

        write_manifest(cfg.root, data_path(key))
        return
    source = None
    if key == "fashion-clutter":
        from gattanet.data.clutter import ClutterSettings, cluttered_fashion

        settings = cfg.clutter or ClutterSettings()
        splits, source = cluttered_fashion(cfg.root, settings), {"clutter": settings.as_dict()}
    else:
        splits = load_raw(key, cfg.root)
    save_tensors(data_path(key), splits, key, source=source)
    print(f"{key}: {len(splits['train'])} train, {len(splits['test'])} test images -> {data_path(key)}")
