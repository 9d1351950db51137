"""Debian's headless Chromium driven over the DevTools protocol (no browser download).

A tiny client: start Chromium on a loopback DevTools port, open one page, navigate, wait for
a condition in the page, click or type through JavaScript, and save screenshots.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0")


SHOTS = Path(os.environ.get("BRIVL_UI_SHOTS",
                           Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"))
"""Where the UI tests save their screenshots."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_not_blank(path: Path) -> None:
    """The screenshot holds a rendered page, not one flat colour."""
    image = Image.open(io.BytesIO(path.read_bytes())).convert("L")
    low, high = image.getextrema()
    assert high - low > 100 and len(image.getcolors(1 << 16) or []) > 20, f"{path} looks blank"


class BrowserError(RuntimeError):
    """The page did not reach the expected state (the message says which and what it shows)."""


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, width: int = 1600, height: int = 1000) -> None:
        self.width, self.height = width, height
        self.ids = itertools.count(1)

    def __enter__(self) -> Browser:
        self.profile = tempfile.mkdtemp(prefix="brivl-chromium-")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        endpoint = None
        deadline = time.monotonic() + 60
        while endpoint is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}")
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            endpoint = found.group(1) if found else None
        if endpoint is None:
            raise BrowserError("chromium printed no DevTools address within 60 s")
        self.socket = connect(endpoint, max_size=64 << 20, open_timeout=30)
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._call("Target.attachToTarget",
                                  {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1,
                   "mobile": False})
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.socket.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def _call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        message_id = next(self.ids)
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def send(self, method: str, params: dict | None = None) -> dict:
        """A DevTools command on the page."""
        return self._call(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def text(self) -> str:
        """The page's visible text."""
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *needles: str, timeout: float = 60.0) -> str:
        """Wait until the visible text holds every needle; the text."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise BrowserError(f"the page never showed {missing}; it shows: {text[:600]!r}")

    def wait_for(self, expression: str, what: str, timeout: float = 60.0) -> Any:
        """Wait until a JavaScript expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise BrowserError(f"{what}: not seen within {timeout:.0f} s; the page shows "
                           f"{self.text()[:600]!r}")

    def click_text(self, text: str,
                   selector: str = "button, a, li, [role=button], [role=tab], span, div") -> None:
        """Click the first element matching ``selector`` whose text is ``text``."""
        found = self.evaluate(
            f"(() => {{ const el = [...document.querySelectorAll({json.dumps(selector)})]"
            f".reverse().find(e => e.innerText && e.innerText.trim() === {json.dumps(text)});"
            " if (!el) return false; el.click(); return true; })()")
        if not found:
            raise BrowserError(f"no {selector!r} with the text {text!r} to click")

    def screenshot(self, path: str | Path) -> Path:
        """Save the viewport as a PNG; the path."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
