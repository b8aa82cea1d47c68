#!/usr/bin/env bash
# The package as a user gets it: build the wheel, install it with its declared dependencies into a
# clean venv (torch/torchvision pinned first, so pip never picks another torch build), then run
# gattanet-cli from outside the checkout. Any failure stops the script with a non-zero exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/gattanet-wheel.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS
say() { echo "check_wheel: $*"; }

say "building the wheel"
"$PYTHON" -m venv "$TMP/build-env"
"$TMP/build-env/bin/pip" wheel -q --no-deps "$ROOT" -w "$TMP/dist"
wheel=$(ls "$TMP"/dist/gattanet-*.whl)
# The listing goes to a file first: `grep -q` stops reading at its first match, and under pipefail
# the lister's broken pipe would fail the check.
"$TMP/build-env/bin/python" -m zipfile -l "$wheel" > "$TMP/wheel-files.txt"
for f in pipeline/profiles/tiny.yaml pipeline/profiles/default.yaml pipeline/report/templates/; do
  grep -q "$f" "$TMP/wheel-files.txt" || { say "FAIL: $f not in $wheel"; exit 1; }
done

say "installing $(basename "$wheel") into a clean venv"
"$PYTHON" -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$TMP/venv/bin/pip" install -q "$wheel"
"$TMP/venv/bin/pip" check
[ "$("$TMP/venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')" = 2.14.1 ] \
  || { say "FAIL: pip replaced the pinned torch"; exit 1; }

work="$TMP/work"
mkdir "$work" && cd "$work"   # outside the checkout: nothing can come from the source tree
cli="$TMP/venv/bin/gattanet-cli"
"$TMP/venv/bin/python" -c 'import pipeline, sys; assert "/site-packages/" in pipeline.__file__, pipeline.__file__'
say "gattanet-cli --help";   "$cli" --help >/dev/null
say "gattanet-cli describe"; "$cli" describe >/dev/null
say "gattanet-cli profile tiny"; "$cli" profile tiny
grep -q "^profile: tiny" params.yaml || { say "FAIL: params.yaml is not the tiny profile"; exit 1; }
say "OK in $((SECONDS - start)) s"
