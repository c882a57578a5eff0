"""A VM's screen as people look at it: ``virtbus vnc --screenshot``, a VNC client through
``virtbus vnc --proxy-only``, and the web console in a real headless Chromium, each showing the guest's
boot text on its VGA console; a viewer's credentials look too (view only)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from servicekit import processes
from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_networking import started, write_manifest
from tests.unit.test_png import decode_png_rgb

pytestmark = pytest.mark.e2e
BLACK = 24  # a channel above this is drawn text (the VGA console is light grey on black)


def lit(rgb: bytes) -> int:
    """Pixels that are not background."""
    return sum(1 for i in range(0, len(rgb), 3) if max(rgb[i:i + 3]) > BLACK)


def reverse_video_rows(rgb: bytes, width: int, height: int, cells: int = 30) -> list[int]:
    """Text rows (16 px) whose first cells (9 px each) are mostly lit: the guest's ready line, which
    its init prints in reverse video on tty1 (firmware text never is)."""
    rows = []
    for row in range(height // 16):
        lit_pixels = sum(1 for y in range(row * 16, row * 16 + 16) for x in range(cells * 9)
                         if max(rgb[(y * width + x) * 3:(y * width + x) * 3 + 3]) > BLACK)
        if lit_pixels > 0.6 * 16 * cells * 9:
            rows.append(row)
    return rows


def similar(a: bytes, b: bytes) -> float:
    """Of the pixels drawn (not background) in either of two equal-sized RGB images, the share that
    are the same in both, give or take a little: the text, not the black around it, must match."""
    assert len(a) == len(b)
    drawn = same = 0
    for i in range(0, len(a), 3):
        if max(a[i:i + 3]) > BLACK or max(b[i:i + 3]) > BLACK:
            drawn += 1
            same += all(abs(a[i + k] - b[i + k]) <= 16 for k in range(3))
    return same / max(1, drawn)


@contextmanager
def cli_server(lab: Lab, *args: str, creds: str | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A long-running CLI verb, and the first line it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "ctl", "--server", lab.url, "--creds", creds or lab.creds, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _recv(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "the VNC proxy closed the connection"
        out += chunk
    return out


def rfb_frame(port: int) -> tuple[int, int, bytes]:
    """A whole framebuffer from a VNC server, as the simplest RFB 3.8 client gets it (raw, 32 bpp)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        assert _recv(s, 12).startswith(b"RFB 003.")
        s.sendall(b"RFB 003.008\n")
        types = _recv(s, _recv(s, 1)[0])
        assert 1 in types, f"security types {list(types)}: no None"
        s.sendall(b"\x01")
        assert _recv(s, 4) == b"\x00\x00\x00\x00"
        s.sendall(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", _recv(s, 4))
        _recv(s, 16)
        _recv(s, struct.unpack(">I", _recv(s, 4))[0])  # the desktop's name
        s.sendall(struct.pack(">BxxxBBBBHHHBBBxxx", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))  # SetPixelFormat
        s.sendall(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw
        s.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))  # FramebufferUpdateRequest, whole
        fb = bytearray(width * height * 3)
        covered = 0
        while covered < width * height:
            kind = _recv(s, 1)[0]
            assert kind == 0, f"server message {kind}"
            (rects,) = struct.unpack(">xH", _recv(s, 3))
            for _ in range(rects):
                x, y, w, h, enc = struct.unpack(">HHHHi", _recv(s, 12))
                if enc != 0:
                    assert w * h == 0 or enc < 0, f"encoding {enc}"
                    continue
                data = _recv(s, w * h * 4)
                for row in range(h):
                    for col in range(w):
                        b, g, r = data[(row * w + col) * 4:(row * w + col) * 4 + 3]
                        fb[((y + row) * width + x + col) * 3:((y + row) * width + x + col) * 3 + 3] = bytes((r, g, b))
                covered += w * h
        return width, height, bytes(fb)


class DevTools:
    """Headless Chromium driven over --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4)."""

    def __init__(self, profile: str) -> None:
        chromium = shutil.which("chromium")
        assert chromium, "chromium is not installed (scripts/setup.sh --test)"
        to_chrome, self.cmd = os.pipe()
        self.out, from_chrome = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1000,700", "about:blank"]
        wire = f'exec "$0" "$@" 3<&{to_chrome} 4>&{from_chrome}'  # the pipe's ends as fds 3 and 4
        self.proc = subprocess.Popen(["bash", "-c", wire, chromium, *flags],
                                     pass_fds=(to_chrome, from_chrome), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self.buf = b""
        self.next_id = 0
        self.session: str | None = None

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.cmd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    assert "error" not in reply, reply
                    return dict(reply["result"])
            assert time.monotonic() < deadline, f"no reply to {method}"
            chunk = os.read(self.out, 1 << 20)
            assert chunk, "chromium went away"
            self.buf += chunk

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=1000, height=700, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def descendants(self) -> list[int]:
        """Chromium's own processes under the one we started (zygote, renderers, utilities)."""
        found, todo = [], [self.proc.pid]
        while todo:
            kids = processes.children(todo.pop())
            found += kids
            todo += kids
        return found

    def close(self) -> None:
        """Browser.close first, so Chromium ends its processes itself and is done with its profile; any
        still running after ours ends are ended by PID, and only then may the profile be removed (a
        renderer still writing into it failed the directory's removal, CI 2026-12-04)."""
        helpers = self.descendants()
        with contextlib.suppress(AssertionError, OSError):
            self.session = None
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # still Chromium's (a PID freed and taken by another process in between is left alone)
        processes.end([pid for pid in helpers if "chrom" in processes.command(pid)], 10)
        os.close(self.cmd)
        os.close(self.out)


def test_the_screen_by_screenshot_proxy_and_web_console(lab: Lab) -> None:
    lab.cli("apply", "-f", write_manifest(lab, "screen", "masquerade"))
    started(lab, "screen")
    lab.cli("console", "screen", "--log", "--until", "VIRTBUS-GUEST-READY", "--timeout", "120")  # serial still works
    time.sleep(1)  # the same line on tty1 comes right after
    shot = lab.state_dir / "screen.png"
    start = time.monotonic()
    done = lab.cli("vnc", "screen", "--screenshot", str(shot))
    print(f"\nvirtbus vnc --screenshot: {time.monotonic() - start:.2f}s ({done.stderr.strip()})")
    width, height, screen = decode_png_rgb(shot.read_bytes())
    assert (width, height) == (720, 400)  # the VGA text mode: 80x25 cells of 9x16
    assert lit(screen) > 2000, "the screen is blank: no boot text"
    assert len(reverse_video_rows(screen, width, height)) == 1, "the guest's line is not on its screen"

    with cli_server(lab, "vnc", "screen", "--proxy-only") as (_, line):
        port = json.loads(line)["port"]
        start = time.monotonic()
        w, h, fb = rfb_frame(port)
        print(f"a whole frame through the proxy: {time.monotonic() - start:.2f}s; "
              f"{similar(fb, screen):.3f} of its text as in the screenshot")
    assert (w, h) == (width, height) and similar(fb, screen) > 0.95
    # a viewer's credentials look (a view-only session: the launcher drops its keys and pointer)
    with cli_server(lab, "vnc", "screen", "--proxy-only", creds=lab.creds_of("viewer")) as (proc, line):
        w, h, fb = rfb_frame(json.loads(line)["port"])
        assert (w, h) == (width, height) and similar(fb, screen) > 0.95

    with cli_server(lab, "console-web", "--listen", "127.0.0.1:0") as (_, line):
        base = line.strip().rsplit(" ", 1)[-1].rstrip("/")
        page = urllib.request.urlopen(f"{base}/", timeout=20).read().decode()  # noqa: S310 - loopback
        assert 'href="/screen/screen"' in page and "Running" in page
        with tempfile.TemporaryDirectory() as profile:
            browser = DevTools(profile)
            try:
                start = time.monotonic()
                browser.open(f"{base}/screen/screen")
                deadline = start + 60
                while browser.evaluate("document.title") != "screen: connected":
                    assert time.monotonic() < deadline, browser.evaluate("document.title")
                    time.sleep(0.1)
                print(f"the web console's screen page connected in Chromium {time.monotonic() - start:.2f}s "
                      "after it was asked for")
                time.sleep(2)  # the first framebuffer update drawn
                rect = browser.evaluate("(() => { const r = document.querySelector('#screen canvas')"
                                        ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
                assert rect[2:] == [width, height], rect
                png = browser.call("Page.captureScreenshot", format="png",
                                   clip={"x": rect[0], "y": rect[1], "width": width, "height": height, "scale": 1})
                # the page's other link: noVNC's own full client, on the same WebSocket
                browser.call("Page.navigate", url=f"{base}/novnc/vnc.html?path=ws/screen&autoconnect=1")
                while not browser.evaluate("document.documentElement.classList.contains('noVNC_connected')"):
                    assert time.monotonic() < deadline + 30, browser.evaluate("document.body.innerText")
                    time.sleep(0.3)
            finally:
                browser.close()
    if keep := os.environ.get("VIRTBUS_TEST_ARTIFACTS"):  # to look at them
        Path(keep).mkdir(parents=True, exist_ok=True)
        Path(keep, "vnc-screenshot.png").write_bytes(shot.read_bytes())
        Path(keep, "vnc-browser.png").write_bytes(base64.b64decode(png["data"]))
    bw, bh, seen = decode_png_rgb(base64.b64decode(png["data"]))
    assert (bw, bh) == (width, height)
    print(f"the web console's screen in Chromium: {similar(seen, screen):.3f} of its text as in the screenshot")
    assert lit(seen) > 2000 and similar(seen, screen) > 0.95, "the browser does not show the guest's screen"
    assert reverse_video_rows(seen, width, height) == reverse_video_rows(screen, width, height)
    lab.cli("delete", "screen", "--wait")


def udp_echo(sock: socket.socket, port: int, payload: bytes) -> float:
    """payload sent to the guest's UDP echo until it comes back whole (UDP may lose one); seconds it took."""
    start = time.monotonic()
    while time.monotonic() < start + 60:
        sock.sendto(payload, ("127.0.0.1", port))
        with contextlib.suppress(TimeoutError):
            while sock.recv(65536) != payload:  # a late answer to an earlier try
                pass
            return time.monotonic() - start
    raise AssertionError(f"{len(payload)} bytes never came back from the guest's UDP echo")


def guest_udp_echoes(lab: Lab, name: str) -> None:
    """udp/0:7: each client's datagrams come back to it, whole (one beyond the guest's MTU too)."""
    lab.cli("console", name, "--log", "--until", "VIRTBUS-GUEST-READY", "--timeout", "180")  # its echo is up
    with cli_server(lab, "port-forward", f"vm/{name}", "udp/0:7") as (_, line):
        assert line.startswith("Forwarding from 127.0.0.1:") and line.split()[-1] == "7/udp", line
        port = int(line.split()[2].rsplit(":", 1)[1])
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        try:
            for i, client in enumerate(clients):
                client.bind(("127.0.0.1", 0))
                client.settimeout(2)
                took = [udp_echo(client, port, f"{name}-{i}-".encode() + os.urandom(size)) for size in (5, 1400, 9000)]
                print(f"\n{name}'s UDP echo through port-forward, client {i}: " +
                      ", ".join(f"{t:.2f}s" for t in took))
        finally:
            for client in clients:
                client.close()


def test_a_guests_port_on_this_host_by_port_forward(lab: Lab) -> None:
    """virtctl port-forward's habit: the guest's web server on a port of 127.0.0.1, and through --stdio
    (ssh's ProxyCommand); a bridge-bound guest (its own pod IP) this time; a viewer may not. UDP too
    (udp/...), to that guest and to a masquerade one (its UDP ports reached through the pod's rules)."""
    lab.cli("apply", "-f", write_manifest(lab, "fwd", "bridge"))
    lab.cli("apply", "-f", write_manifest(lab, "fwdm", "masquerade"))
    lab.cli("start", "fwdm")  # both boot at once
    started(lab, "fwd")
    started(lab, "fwdm")
    guest_udp_echoes(lab, "fwd")
    guest_udp_echoes(lab, "fwdm")
    lab.cli("delete", "fwdm", "--wait")
    with cli_server(lab, "port-forward", "vm/fwd", "0:80") as (_, line):
        assert line.startswith("Forwarding from 127.0.0.1:") and line.split()[-1] == "80", line
        port = int(line.split()[2].rsplit(":", 1)[1])
        start = time.monotonic()
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()  # noqa: S310
        print(f"\nthe guest's page through port-forward: {time.monotonic() - start:.2f}s")
        assert "hostname: fwd" in page
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)  # nc -N's habit: the request, then the end of it
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.") and b"hostname: fwd" in answer, answer
    done = subprocess.run([sys.executable, "-m", "ctl", "--server", lab.url, "--creds", lab.creds, "port-forward",
                           "--stdio", "vm/fwd", "80"], input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0 and done.stdout.startswith(b"HTTP/1.") and b"hostname: fwd" in done.stdout, done
    refused = subprocess.run([sys.executable, "-m", "ctl", "--server", lab.url, "--creds", lab.creds_of("viewer"),
                              "port-forward", "--stdio", "vm/fwd", "80"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60, cwd=REPO)
    assert refused.returncode == 1 and "Forbidden" in refused.stderr, refused
    lab.cli("delete", "fwd", "--wait")
