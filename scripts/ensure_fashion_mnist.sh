#!/usr/bin/env bash
# Make sure the Fashion-MNIST IDX files are where params.yaml looks (data.fashion-mnist.root):
# already there, else Debian's dataset-fashion-mnist where apt works, else torchvision's download.
set -euo pipefail
root=$(.venv/bin/python -c "import yaml; p = yaml.safe_load(open('params.yaml')); print(p.get('data', {}).get('fashion-mnist', {}).get('root', ''))")
[ -z "$root" ] && exit 0   # this profile does not use Fashion-MNIST
have() { [ -f "$root/train-images-idx3-ubyte.gz" ] || [ -f "$root/train-images-idx3-ubyte" ]; }
have && { echo "Fashion-MNIST: $root"; exit 0; }
if [ "$root" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"
  (apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }) >/dev/null
  have && exit 0
fi
echo "Fashion-MNIST: downloading with torchvision into $root"
.venv/bin/python - "$root" <<'PY'
import sys, pathlib, shutil, tempfile
from torchvision.datasets import FashionMNIST
root = pathlib.Path(sys.argv[1]); root.mkdir(parents=True, exist_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    FashionMNIST(tmp, download=True)
    for f in (pathlib.Path(tmp) / "FashionMNIST" / "raw").glob("*.gz"):
        shutil.copy(f, root / f.name)
PY
have || { echo "Fashion-MNIST is missing from $root: install Debian's dataset-fashion-mnist or put the IDX files there" >&2; exit 1; }
