"""Render an HTML file in headless Chromium: a PNG screenshot, the DOM after load and the console errors.

Chromium logs every console message to stderr as `INFO:CONSOLE...` (whatever its level) when started with
`--enable-logging=stderr`; uncaught exceptions and blocked loads (Content-Security-Policy) show up there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0")
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")
_ERROR = re.compile(r"Uncaught|Content Security Policy|Refused to|Failed to load|\bError\b")


@dataclass
class RenderResult:
    png: Path
    dom: str
    console: list[str] = field(default_factory=list)  # every console message
    console_errors: list[str] = field(default_factory=list)

    @property
    def rendered(self) -> bool:
        return 'data-rendered="yes"' in self.dom


def find_chromium() -> str | None:
    """`$SUTURE_CHROMIUM`, else the first Chromium/Chrome on PATH, else None."""
    override = os.environ.get("SUTURE_CHROMIUM")
    if override:
        return override
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def console_messages(stderr: str) -> tuple[list[str], list[str]]:
    """(all console messages, the ones that are errors) from Chromium's stderr log."""
    messages = [m.group(1) for line in stderr.splitlines() if (m := _CONSOLE.search(line))]
    errors = [line for line in stderr.splitlines() if "ERROR:CONSOLE" in line]
    errors += [m for m in messages if _ERROR.search(m)]
    return messages, errors


def screenshot(html_path: str | Path, png_path: str | Path, window_size: tuple[int, int] = (1200, 1600),
               timeout: float = 120.0) -> RenderResult:
    """Load `html_path` in headless Chromium, write a `window_size` screenshot to `png_path`."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found: install it (apt-get install -y chromium) or set SUTURE_CHROMIUM")
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="suture-chromium-") as profile:
        command = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png_path}",
                   f"--window-size={window_size[0]},{window_size[1]}", "--dump-dom", html_path.as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not png_path.exists():
        raise RuntimeError(f"chromium exited with {done.returncode}; stderr tail:\n{done.stderr[-2000:]}")
    messages, errors = console_messages(done.stderr)
    return RenderResult(png=png_path, dom=done.stdout, console=messages, console_errors=errors)
