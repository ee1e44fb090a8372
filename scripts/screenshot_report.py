"""Screenshot of an HTML report in headless Chromium, to check that it renders (and for docs).

    python scripts/screenshot_report.py /tmp/runs/comparison/report.html docs/report.png
    python scripts/screenshot_report.py REPORT.html OUT.png --top 1700 --height 1600 --scale 0.7

Needs a Chromium binary (Debian: ``apt-get install -y chromium``); not part of the test suite,
which has none. The page is opened from disk with the network disabled, so the shot also
shows that the report needs nothing from outside. The PNG is saved with a 256-colour palette
to keep it small.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    """The first Chromium-family browser on PATH."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(f"no browser found: install one of {', '.join(BROWSERS)}")


def screenshot(
    report: Path, out: Path, width: int = 1400, height: int = 1800, top: int = 0, scale: float = 1
) -> Path:
    """Render ``report`` in a ``width``-pixel window and save the part from ``top`` down to
    ``top + height``, resized by ``scale``, as a palette PNG at ``out``. (The window is made
    tall enough instead of scrolling: a headless shot taken after a jump to an anchor can come
    out blank, before the inline images are painted.)"""
    url = Path(report).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"
        command = [
            find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9",
            f"--window-size={width},{top + height}", "--virtual-time-budget=5000",
            f"--screenshot={shot}", url,
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        image = Image.open(shot).convert("RGB").crop((0, top, width, top + height))
    if scale != 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(256).save(out, optimize=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("report", type=Path, help="the HTML file")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--top", type=int, default=0, help="pixels skipped from the top")
    parser.add_argument("--scale", type=float, default=1.0, help="resize factor of the PNG")
    args = parser.parse_args(argv)
    path = screenshot(args.report, args.out, args.width, args.height, args.top, args.scale)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
