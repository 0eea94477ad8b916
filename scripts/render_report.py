"""Render a tod-clean HTML report to a PNG with headless Chromium, to check how it looks in a real browser.

    python scripts/render_report.py report.html docs/report-screenshot.png [--width 1280] [--height 2400]

Chromium runs with no network features and a fresh, throw-away profile; the page itself needs no network
(its CSS and figures are inline). Exits non-zero with one line on stderr when Chromium is missing or fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def render(html: Path, png: Path, *, width: int = 1280, height: int = 2400, timeout: float = 120) -> None:
    """Screenshot ``html`` at ``width`` x ``height`` CSS pixels into ``png`` (written, then renamed)."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError(f"no Chromium found (looked for {', '.join(BROWSERS)}); apt-get install chromium")
    html = html.resolve()
    if not html.is_file():
        raise RuntimeError(f"{html}: no such file")
    png = png.resolve()
    if not png.parent.is_dir():
        raise RuntimeError(f"{png}: the folder {png.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="render-report-") as profile:
        shot = Path(profile) / "shot.png"
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}/user-data",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            html.as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0 or not shot.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"chromium failed (exit {done.returncode}): {' | '.join(tail)}")
        shutil.move(str(shot), png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the report page")
    parser.add_argument("png", type=Path, help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    try:
        render(args.html, args.png, width=args.width, height=args.height)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.png} ({args.png.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
