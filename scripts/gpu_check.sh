#!/usr/bin/env bash
# The GPU path, checked on a machine with CUDA, in one run of under 10 minutes on one H100:
#   1. the CUDA tests (pytest -m gpu: fast paths vs the plain path in bf16, data on the device, channels_last,
#      one-rank NCCL DDP, a checkpoint round trip);
#   2. `gattanet-cli bench --device cuda`;
#   3. the default profile's stages end to end on the GPU, through `gattanet-cli stage` (no DVC there), each
#      stage's seconds, and `gattanet-cli plan --device cuda` for the paper profile's toy rows from rates
#      measured there.
# Prepare on a machine with the data and PyPI (copies Fashion-MNIST's IDX files and downloads the pure-Python
# wheels the GPU machine's image lacks into .gpu_carry/, which git ignores):
#   bash scripts/gpu_check.sh --prepare
# then, on the GPU machine, in a copy of the checkout with .gpu_carry/ beside it:
#   OUT=/some/folder bash scripts/gpu_check.sh
# Everything it prints also goes to $OUT/gpu_check.log; per-stage seconds to $OUT/gpu_stages.tsv.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
WHEELS="umap-learn==0.5.12 pynndescent dvclive==3.49.1 dvc-render dvc-studio-client funcy gto scmrepo"

if [ "${1:-}" = --prepare ]; then
  set -e
  mkdir -p "$CARRY/fashion-mnist" "$CARRY/wheels"
  cp /usr/share/datasets/fashion-mnist/*ubyte* "$CARRY/fashion-mnist/"
  .venv/bin/pip download -q --no-deps --only-binary=:all: -d "$CARRY/wheels" $WHEELS
  du -sh "$CARRY"; exit 0
fi

OUT=${OUT:-$PWD/gpu-check-out}
DEVICE=${DEVICE:-cuda}      # DEVICE=cpu PROFILE=tiny PAPER_PLAN=0: a dry run of the script's plumbing on a CPU
PROFILE=${PROFILE:-default}
PAPER_PLAN=${PAPER_PLAN:-1}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
cli() { "$PY" -m pipeline.cli "$@"; }
section() { printf '\n===== %s (%s)\n' "$1" "$(date -u +%T)"; }

section machine
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || { echo "no GPU here"; exit 2; }
fi
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
          'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
if [ -d "$CARRY/wheels" ]; then   # only what the image lacks: never replace its torch
  missing=$("$PY" - <<'PY'
import importlib.util
print(" ".join(m for m in ("umap", "pynndescent", "dvclive") if importlib.util.find_spec(m) is None))
PY
)
  [ -n "$missing" ] && { echo "installing carried wheels for: $missing"; "$PY" -m pip install -q --no-index --no-deps "$CARRY"/wheels/*.whl; }
fi

section "CUDA tests (pytest -m gpu)"
"$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -rs
tests_rc=$?

section "gattanet-cli bench --device $DEVICE"
cli bench --device "$DEVICE"

section "$PROFILE profile, stage by stage on $DEVICE"
work=$(mktemp -d)   # a copy of the checkout: the stages write there, never over the committed outputs here
tar --exclude=./.git --exclude=./.venv --exclude=./.gpu_carry --exclude=./gpu-check-out -cf - . | tar -xf - -C "$work"
params=$work/params.yaml
cli profile "$PROFILE" --params "$params" >/dev/null   # default.yaml + the profile's overlay, composed
root=$PWD/$CARRY/fashion-mnist
[ -d "$root" ] || root=/usr/share/datasets/fashion-mnist
set_=(--set "device=$DEVICE" --set "data.fashion-mnist.root=$root")
printf 'stage\tentry\tseconds\trc\n' > "$OUT/gpu_stages.tsv"
cli plan --params "$params" --json --no-measure > "$work/plan.json" 2>/dev/null || true
entries=$("$PY" -c "import json,sys; [print(r['stage'], r['entry'] or '') for r in json.load(open(sys.argv[1]))['rows']]" "$work/plan.json")
stages_rc=0
start_all=$(date +%s.%N)
while read -r stage entry; do
  t0=$(date +%s.%N)
  (cd "$work" && cli stage "$stage" $entry --params "$params" "${set_[@]}")
  rc=$?
  s=$("$PY" -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
  printf '%s\t%s\t%s\t%s\n' "$stage" "${entry:--}" "$s" "$rc" | tee -a "$OUT/gpu_stages.tsv"
  [ $rc -ne 0 ] && { stages_rc=$rc; break; }
done <<< "$entries"
total=$("$PY" -c "print(f'{$(date +%s.%N) - $start_all:.0f}')")
echo "$PROFILE profile on $DEVICE: ${total} s in all (stage rc $stages_rc)"
cp "$work/reports/summary.json" "$OUT/" 2>/dev/null || true

if [ "$PAPER_PLAN" = 1 ]; then
  section "gattanet-cli plan --device $DEVICE (paper profile) from rates measured here"
  cli profile paper --params "$work/paper.yaml" >/dev/null
  cli bench --plan --params "$work/paper.yaml" --device "$DEVICE" --probe-seconds 2 --save --figures "$OUT/bench_$DEVICE.json" >/dev/null
  cli plan --params "$work/paper.yaml" --device "$DEVICE" --figures "$OUT/bench_$DEVICE.json" --no-measure
fi

section summary
echo "CUDA tests rc $tests_rc; $PROFILE stages rc $stages_rc, ${total} s; log $OUT/gpu_check.log"
[ $tests_rc -eq 0 ] && [ $stages_rc -eq 0 ]
