#!/usr/bin/env python3
"""Draw a grid of cluttered Fashion-MNIST test canvases with their labels (docs/clutter-examples.png).

Usage: python scripts/clutter_examples.py [--root DIR] [--out PNG] [--n 16] [--canvas 32 --item-size 20
--fragments 4 --fragment-size 8 --seed 0]; the item's box is outlined so the eye can check it is the label's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from gattanet.data.clutter import ClutterSettings, generate  # noqa: E402
from gattanet.data.datasets import DEFAULT_ROOTS, read_fashion_split  # noqa: E402
from gattanet.data.specs import FASHION_CLASSES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOTS["fashion-mnist"])
    parser.add_argument("--out", type=Path, default=Path("docs/clutter-examples.png"))
    parser.add_argument("--n", type=int, default=16)
    defaults = ClutterSettings()
    for name, value in defaults.as_dict().items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    args = parser.parse_args()
    settings = ClutterSettings(**{k: getattr(args, k) for k in defaults.as_dict()})
    made = generate(*read_fashion_split(args.root, "test"), settings, "test")
    cols = 8
    rows = -(-args.n // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.6 * cols, 3.4 * rows))
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        for row, boxed in ((2 * r, False), (2 * r + 1, True)):
            ax = axes[row, c]
            ax.axis("off")
            if i >= args.n:
                continue
            ax.imshow(made.images[i, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if boxed:
                y, x = made.item_at[i]
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), settings.item_size, settings.item_size,
                                       fill=False, edgecolor="red", linewidth=1))
            else:
                ax.set_title(FASHION_CLASSES[made.labels[i]], fontsize=8)
    fig.suptitle(f"cluttered Fashion-MNIST, test split ({', '.join(f'{k}={v}' for k, v in settings.as_dict().items())}); "
                 f"under each, the item's box", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"{args.n} canvases -> {args.out}")


if __name__ == "__main__":
    main()
