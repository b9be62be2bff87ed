"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol through a pipe
(`--remote-debugging-pipe`: fd 3 in, fd 4 out, NUL-separated JSON), so no debugging port is
opened and nothing beyond the standard library is needed. Used by the dashboards test.

The browser gets a throwaway profile and HOME: a CA it must trust (the sandbox's local CA) goes
into that profile's NSS database with certutil, never into the system's trust store.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]


class BrowserError(AssertionError):
    pass


class Chromium:
    """One browser process; `page()` opens a tab with an attached, flattened session."""

    def __init__(self, *, trust_pem: str = "", resolver_rules: str = "") -> None:
        binary = shutil.which("chromium")
        if not binary:
            raise BrowserError("chromium is missing on this machine (make host-deps)")
        self.home = tempfile.mkdtemp(prefix="techno-os-chromium-")
        if trust_pem:
            self._trust(trust_pem)
        args = [binary, *FLAGS, f"--user-data-dir={self.home}/profile"]
        if resolver_rules:
            args.append(f"--host-resolver-rules={resolver_rules}")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # in the child: fd 3 reads our commands, fd 4 writes its answers
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [*args, "about:blank"],
            env={**os.environ, "HOME": self.home},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(self.home) / "chromium.log", "wb"),  # noqa: SIM115
            preexec_fn=wire,  # noqa: PLW1509 (no threads in this process use fork-unsafe state)
            close_fds=False,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _trust(self, pem: str) -> None:
        db = Path(self.home) / ".pki" / "nssdb"
        db.mkdir(parents=True)
        ca = Path(self.home) / "ca.pem"
        ca.write_text(pem)
        for argv in (
            ["certutil", "-d", f"sql:{db}", "-N", "--empty-password"],
            ["certutil", "-d", f"sql:{db}", "-A", "-n", "techno-os-ca", "-t", "C,,", "-i", str(ca)],
        ):
            subprocess.run(argv, check=True, capture_output=True, timeout=30)

    # --- protocol -----------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("no answer from Chromium in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"Chromium exited: {self.log()[-1500:]}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def send(
        self, method: str, params: dict | None = None, session: str = "", timeout: float = 30
    ) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_event(self, method: str, session: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(index)
            self.events.append(self._read_message(deadline))

    def page(self, headers: dict[str, str], width: int = 1400, height: int = 1000) -> str:
        """A new tab that sends `headers` with every request; returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Network.setExtraHTTPHeaders", {"headers": headers}, session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        return session

    def navigate(self, session: str, url: str, timeout: float = 60) -> None:
        self.events = [e for e in self.events if e.get("sessionId") != session]
        result = self.send("Page.navigate", {"url": url}, session=session)
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", session, timeout)

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, session: str, path: Path) -> None:
        data = self.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            session=session,
        )["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def drain(self, timeout: float = 0.5) -> None:
        """Read the events already sent (console errors, exceptions) into `events`."""
        import select

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._from_browser], [], [], 0.1)
            if ready or b"\0" in self._buffer:
                self.events.append(self._read_message(deadline + 5))

    def problems(self, session: str) -> list[str]:
        """JavaScript exceptions, console errors, failed loads and HTTP errors on the page."""
        self.drain()
        found = []
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                thrown = details.get("exception", {}).get("description", details)
                found.append(f"exception: {thrown}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(f"console.error: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                found.append(f"load failed: {params.get('errorText')}")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                found.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
        return found

    def log(self) -> str:
        path = Path(self.home) / "chromium.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.home, ignore_errors=True)
