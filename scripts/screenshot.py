"""The README's picture: the first screen of reports/index.html in headless Chromium at 1400 × 900 px, saved small.

`make screenshot` (after `dvc repro` or `gattanet-cli stage report`) rewrites docs/report-first-screen.png.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPORT, SHOT = Path("reports/index.html"), Path("docs/report-first-screen.png")
WINDOW, WIDTH = (1400, 900), 900  # the browser's window, and the PNG's width (256 colours: a small file)


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not REPORT.exists():
        print(f"needs chromium on PATH and {REPORT} (gattanet-cli stage report)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "shot.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                        f"--screenshot={raw}", REPORT.resolve().as_uri()], check=True, capture_output=True, timeout=120)
        with Image.open(raw) as im:
            small = im.convert("RGB").resize((WIDTH, round(im.height * WIDTH / im.width)), Image.LANCZOS)
    small.quantize(colors=256).save(SHOT, optimize=True)
    print(f"{SHOT} ({SHOT.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
