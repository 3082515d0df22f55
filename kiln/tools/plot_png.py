"""SVG to PNG through a headless Chromium (or Google Chrome) screenshot.

Headless Chromium needs no display and no GPU. It is asked for nothing but a screenshot of a
local file: no network, no profile of the user's (a throw-away one in a temporary folder).
`--no-sandbox` because the sandbox cannot start as root or in many containers, and the page
is our own SVG.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import KilnError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
ENV = "KILN_CHROMIUM"  # path of the browser, where it is not on PATH under one of the names above
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
TIMEOUT_S = 120


class ChromiumError(KilnError):
    """Chromium, needed for PNG output, is missing or failed."""


def find_chromium() -> str | None:
    """The browser binary: $KILN_CHROMIUM if set, else the first of BROWSERS on PATH."""
    given = os.environ.get(ENV)
    if given:
        return given if shutil.which(given) else None
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def require_chromium() -> str:
    found = find_chromium()
    if found:
        return found
    given = os.environ.get(ENV)
    where = f"{ENV}={given} is not an executable" if given else f"none of {', '.join(BROWSERS)} is on PATH"
    raise ChromiumError(
        f"PNG output needs Chromium or Google Chrome (run headless: no display or GPU needed), and {where}; "
        f"install it (Debian/Ubuntu: apt-get install chromium), or set {ENV} to the browser, or use --format svg"
    )


def svg_to_png(svg: str, width: int, height: int, scale: float = 1.0, workdir: Path | None = None) -> bytes:
    """The PNG of `svg` at width x height CSS pixels times `scale`. The browser works in a temporary
    folder inside `workdir` (default: the system's): a snap-packaged Chromium (Ubuntu's) sees
    only the user's home, not the system's /tmp, so the caller passes the output's folder."""
    browser = require_chromium()
    with tempfile.TemporaryDirectory(prefix="kiln-plot-", dir=workdir) as tmp:
        page, shot = Path(tmp) / "chart.svg", Path(tmp) / "chart.png"
        page.write_text(svg, encoding="utf-8")
        command = [
            browser,
            *HEADLESS_FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={width},{height}",
            f"--force-device-scale-factor={scale:g}",
            f"--screenshot={shot}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ChromiumError(f"{browser} did not finish the PNG in {TIMEOUT_S} s; use --format svg, or try another browser with {ENV}") from None
        except OSError as e:
            raise ChromiumError(f"{browser} cannot be started ({e.strerror}); set {ENV} to a working Chromium, or use --format svg") from None
        data = shot.read_bytes() if shot.exists() else b""
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            tail = " | ".join(line for line in done.stderr.splitlines()[-3:] if line.strip())
            raise ChromiumError(f"{browser} wrote no PNG (exit {done.returncode}: {tail or 'no message'}); use --format svg, or set {ENV} to another browser")
        return data
