#!/usr/bin/env bash
# Run a command as this project would run on an AVX2-only CPU (no AVX-512, so no native bf16), on a machine that has
# more: for finding what such a CPU pays (fp32 instead of bf16, any bf16 left on oneDNN's slow reference kernels),
# not for its wall times, since the cores stay this machine's (the AVX2 EPYC's fp32 pretraining step is 851 img/s,
# this one's under the same kernels about 1,500: docs/RUNS.md).
#
#   scripts/emulate_avx2.sh make test-fast
#   scripts/emulate_avx2.sh .venv/bin/gattanet-cli bench
#
# How: in a private mount namespace, /proc/cpuinfo is replaced by a copy without the avx512*/amx*/avx_vnni flags
# (gattanet.engine.precision reads the flags from there: fp32, CPU class "AVX2"), and oneDNN and ATen are kept to
# their AVX2 kernels (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY). Needs root, or unshare's user namespaces (-r).
set -euo pipefail
if [ $# -eq 0 ]; then
    echo "usage: scripts/emulate_avx2.sh COMMAND [ARG...]" >&2
    exit 2
fi
fake=$(mktemp)
trap 'rm -f "$fake"' EXIT
sed -E 's/ (avx512[a-z0-9_]*|amx[a-z0-9_]*|avx_vnni)//g' /proc/cpuinfo > "$fake"
if [ "$(id -u)" -eq 0 ]; then unshare=(unshare -m); else unshare=(unshare -r -m); fi
"${unshare[@]}" bash -c 'mount --bind "$0" /proc/cpuinfo && exec env ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 "$@"' \
    "$fake" "$@"
