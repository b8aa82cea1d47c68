#!/usr/bin/env python3
"""Write pipeline/plots/template.html: DVC's plots page with vega, vega-lite and vega-embed inlined.

`dvc plots show` fills the template configured as `plots.html_template` (.dvc/config). DVC's own page
loads these three libraries from a CDN, so offline it renders nothing; this one carries them, with
their licence notices, and has no `{scripts}` placeholder, so DVC adds no CDN <script> to it.

The three npm tarballs are fetched from the npm registry and checked against the sha512 integrity
the registry publishes (pinned below). Same major lines as dvc_render's defaults (vega 5, vega-lite 5,
vega-embed 6). Rerun after changing a version: `python3 scripts/vendor_vega.py`."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "pipeline" / "plots"
REGISTRY = "https://registry.npmjs.org"
PACKAGES = [  # name, version, build file, the registry's dist.integrity
    ("vega", "5.33.1", "build/vega.min.js",
     "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="),
    ("vega-lite", "5.23.0", "build/vega-lite.min.js",
     "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    ("vega-embed", "6.29.0", "build/vega-embed.min.js",
     "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
]

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
<!--
{notices}
-->
{inline_scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(name: str, version: str, integrity: str) -> tarfile.TarFile:
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    data = urllib.request.urlopen(url, timeout=120).read()
    algorithm, digest = integrity.split("-", 1)
    if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != digest:
        raise SystemExit(f"{url}: integrity mismatch (expected {integrity})")
    return tarfile.open(fileobj=io.BytesIO(data))


def read(tar: tarfile.TarFile, member: str) -> str | None:
    try:
        return tar.extractfile(f"package/{member}").read().decode("utf-8")
    except KeyError:
        return None


def main() -> None:
    notices, scripts, missing = [], [], []
    bsd = None
    for name, version, build, integrity in PACKAGES:
        tar = fetch(name, version, integrity)
        meta = json.loads(read(tar, "package.json"))
        js = read(tar, build)
        for bad in ("</script", "<!--", "{plot_divs}", "{refresh_tag}", "{scripts}"):
            if bad in js:
                raise SystemExit(f"{name}/{build} contains {bad!r}: it cannot be inlined as is")
        licence = read(tar, "LICENSE")
        bsd = bsd or licence
        deps = ", ".join(sorted(meta.get("dependencies", {})))
        author = meta.get("author", "the Vega project")
        author = author.get("name", author) if isinstance(author, dict) else author
        if licence is None:
            missing.append(len(notices))
        notices.append(f"{name} {version} ({build}), licence {meta['license']}, by {author}.\n"
                       f"Its npm dependencies (the browser build bundles those it uses): {deps}.\n\n"
                       + (licence.strip() if licence else "(The npm package ships no LICENSE file.) BSD-3-Clause:"))
        scripts.append(f'    <script type="text/javascript">/* {name} {version}, {meta["license"]}: '
                       f"see the notices above */\n{js}\n    </script>")
    for i in missing:  # the same UW Interactive Data Lab BSD-3-Clause text as its sibling packages ship
        notices[i] += "\n\n" + bsd.strip()
    notices.append("The bundled components are each under their own permissive licence (BSD-3-Clause for the vega-*\n"
                   "packages, ISC for d3-* and semver, MIT for fast-json-patch and json-stringify-pretty-compact, 0BSD\n"
                   "for tslib); see each package on the npm registry.")
    text = "\n\n".join(notices).replace("--", "- -")  # no "--" inside an HTML comment
    page = PAGE.format(notices=text, inline_scripts="\n".join(scripts),
                       refresh_tag="{refresh_tag}", plot_divs="{plot_divs}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "template.html").write_text(page, encoding="utf-8")
    (OUT / "LICENSES.txt").write_text("Vendored into template.html by scripts/vendor_vega.py.\n\n" + text + "\n",
                                      encoding="utf-8")
    print(f"wrote {OUT / 'template.html'} ({len(page) // 1024} KiB) and LICENSES.txt")


if __name__ == "__main__":
    main()
