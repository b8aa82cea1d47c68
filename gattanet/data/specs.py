"""Facts about each supported dataset: image shape, classes, and the class groups the figures use."""

from dataclasses import dataclass, field

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    size: int  # square input side the models see
    num_classes: int
    classes: tuple[str, ...] = ()
    groups: dict = field(default_factory=dict)  # group name -> class indices (Fig. 2b)


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        "fashion-mnist", 1, 32, 10, FASHION_CLASSES,
        {"clothing": (0, 1, 2, 3, 4, 6), "footwear": (5, 7, 9), "bags": (8,)}),
    "fashion-clutter": DatasetSpec(  # generated from fashion-mnist (gattanet.data.clutter): a 32x32 canvas
        "fashion-clutter", 1, 32, 10, FASHION_CLASSES,
        {"clothing": (0, 1, 2, 3, 4, 6), "footwear": (5, 7, 9), "bags": (8,)}),
    "cifar10": DatasetSpec(
        "cifar10", 3, 32, 10, CIFAR10_CLASSES,
        {"vehicles": (0, 1, 8, 9), "animals": (2, 3, 4, 5, 6, 7)}),
    "cifar100": DatasetSpec("cifar100", 3, 32, 100),  # class names come from the data files
    "imagenet": DatasetSpec("imagenet", 3, 224, 1000),  # class names come from the folder tree
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset, or a ValueError listing the supported ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}") from None
