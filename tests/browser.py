"""Headless Chromium for the tests that look at Flower: render a page, take its DOM and a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--virtual-time-budget=8000"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    return path


def render(url: str, screenshot: str | None = None) -> str:
    """The page's DOM once its AJAX has run; with ``screenshot``, also a PNG of it there."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"]
        if screenshot:
            subprocess.run([chromium(), *flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=90)
        done = subprocess.run([chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    return done.stdout


def table_rows(dom: str) -> list[str]:
    """The text of each row of Flower's task table, tags stripped."""
    body = dom.split('id="tasks-table"', 1)[-1]
    return [re.sub(r"<[^>]+>", " ", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)]
