"""The dashboard in headless Chromium, driven over the DevTools protocol:
the page loads from a real `stemedb serve`, shows the current count, updates
after a write, and logs no console errors.  Skipped when Chromium is absent
(the project's set-up installs Debian's `chromium`)."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from stemedb.client import Client

from .test_server import servers  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                       "google-chrome")) if p), None)


class CDP:
    """A minimal DevTools-protocol client over a standard-library WebSocket."""

    def __init__(self, ws_url: str, timeout: float = 10.0):
        u = urllib.parse.urlsplit(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the handshake")
            head += chunk
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _recv(self) -> dict:
        data = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            data += self._read(n)
            if b0 & 0x80:  # FIN
                return json.loads(data)

    def _send(self, obj: dict) -> None:
        payload = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        mid = self.next_id
        self._send({"id": mid, "method": method, "params": params})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = self._recv()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def evaluate(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def close(self) -> None:
        self.sock.close()


def console_errors(events: list[dict]) -> list[str]:
    errs = []
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            errs.append(json.dumps(p.get("exceptionDetails", {}))[:500])
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errs.append(json.dumps(p.get("args", []))[:500])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errs.append(p["entry"].get("text", "")[:500])
    return errs


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1280,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    port = None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline and port is None:
        line = proc.stderr.readline().decode(errors="replace")
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if m:
            port = int(m.group(1))
    if port is None:
        proc.kill()
        pytest.skip("Chromium did not start: " + "".join(lines)[-2000:])
    try:
        yield port
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)


def open_page(port: int) -> CDP:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
        targets = json.loads(r.read())
    page = next(t for t in targets if t.get("type") == "page")
    cdp = CDP(page["webSocketDebuggerUrl"])
    for domain in ("Runtime", "Log", "Page"):
        cdp.call(f"{domain}.enable")
    return cdp


def wait_value(cdp: CDP, expr: str, want, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = cdp.evaluate(expr)
        if value == want:
            return value
        time.sleep(0.2)
    return value


def test_dashboard_shows_count_updates_and_logs_no_errors(servers, browser, tmp_path):  # noqa: F811
    s = servers().start()
    api = Client(s.url)
    for i in range(3):
        api.put({"concept_path": "drugs/semaglutide", "predicate": "risk", "value": f"v{i}",
                 "confidence": 0.5 + i / 10, "source": "pubmed://1"})
    cdp = open_page(browser)
    try:
        cdp.call("Page.navigate", url=s.dashboard_url + "/")
        count = "document.getElementById('assertion-count').dataset.count"
        assert wait_value(cdp, count, "3") == "3", "the page shows the current count"
        assert cdp.evaluate("document.getElementById('health').dataset.status") == "healthy"
        rows = cdp.evaluate("document.querySelectorAll('#recent tbody tr').length")
        assert rows == 3, "recent writes are listed"
        api.put({"concept_path": "drugs/semaglutide", "predicate": "risk", "value": "new",
                 "confidence": 0.9, "source": "fda://label"})
        assert wait_value(cdp, count, "4") == "4", "the count updates after a write"
        # The conflict explorer, as a person would use it.
        cdp.evaluate("document.getElementById('conflict-path').value='drugs/semaglutide';"
                     "document.getElementById('conflict-predicate').value='risk';"
                     "document.getElementById('conflict-form').requestSubmit()")
        claims = wait_value(cdp, "document.querySelectorAll('#conflict-result table tr').length", 5)
        assert claims == 5, "four distinct values plus the header row"
        shot = cdp.call("Page.captureScreenshot", format="png")
        (tmp_path / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
        time.sleep(2.5)  # one more poll cycle, to catch errors in the periodic path
        cdp.evaluate("1")
        assert console_errors(cdp.events) == [], console_errors(cdp.events)
    finally:
        cdp.close()
