"""Hostile media sources: a scripted origin (redirects, stalls, trickles, lies about sizes,
serves pages and non-media as video) and canaries that record any connection reaching them."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

# The hostile stack's worker settings the sources are scripted against.
ALLOWED_HOST = "127.0.0.2"
MAX_MEDIA_BYTES = 2 * 1024 * 1024

MP4_HEAD = struct.pack(">I4s4sI4s4s", 24, b"ftyp", b"isom", 0x200, b"isom", b"mp41")


def sample_mp4(size: int) -> bytes:
    """A valid-looking ISO-BMFF file of ``size`` bytes (``ftyp`` + one ``mdat`` box)."""
    body = size - len(MP4_HEAD) - 8
    return (
        MP4_HEAD
        + struct.pack(">I4s", body + 8, b"mdat")
        + bytes(range(256)) * (body // 256)
        + b"\0" * (body % 256)
    )


# Bodies that are not media, each served with ``Content-Type: video/mp4``.
NOT_MEDIA = {
    "html": b"<!doctype html><html><head><title>video</title></head><body>no video</body></html>",
    "html-upper": b"<HTML><BODY><H1>It works!</H1>" + b" " * 200 + b"</BODY></HTML>",
    "text": b"this is plain text pretending to be a video file, " * 20,
    "json": b'{"video": "not really", "padding": "' + b"x" * 200 + b'"}',
    "elf": b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 300,
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 300,
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" + b"\x00" * 200,
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "empty": b"",
    "tiny": b"\x00\x00\x00",
}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a worker hanging up on a stalled body is expected here


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


class _Background:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Canary(_Background):
    """An HTTP server at an address the worker must never reach; counts every request, and
    would serve real media so that a breach shows as a succeeded task too."""

    def __init__(self, host: str) -> None:
        self.hits: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                canary.hits.append(self.path)
                body = sample_mp4(4096)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        server_class = _QuietServer6 if ":" in host else _QuietServer
        super().__init__(server_class((host, 0), Handler))
        self.host = host

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class Origin(_Background):
    """The allowed origin, scripted by path:

    ``/media.mp4``               a small valid MP4
    ``/redirect?to=URL[&status=302]``  a redirect
    ``/page?video=URL``          an HTML page whose ``og:video`` and ``<video>`` name URL
    ``/stall``                   headers and 64 bytes, then silence
    ``/trickle``                 a valid MP4 head, then 16 bytes every 0.25 s
    ``/hold/NAME``               a steady 32 KiB/s download until :meth:`release`
    ``/declares/N``              ``Content-Length: N`` (and a valid head, then silence)
    ``/chunked/N``               N bytes of MP4, chunked, without Content-Length
    ``/not-media/NAME``          a body of :data:`NOT_MEDIA` as ``video/mp4``
    """

    def __init__(self, host: str = "127.0.0.2") -> None:
        self.host = host
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._released: dict[str, threading.Event] = {}
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _head(
                self, status: int, content_type: str, length: int | None, **headers: str
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()

            def _wait(self, seconds: float) -> bool:
                """Sleep unless the origin stops; False once it has."""
                return not origin._stop.wait(seconds)

            def do_GET(self) -> None:
                origin.requests.append(self.path)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                path = parts.path
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._route(path, query)

            def _route(self, path: str, query: dict[str, str]) -> None:
                if path == "/media.mp4":
                    body = sample_mp4(64 * 1024)
                    self._head(200, "video/mp4", len(body))
                    self.wfile.write(body)
                elif path == "/redirect":
                    self._head(
                        int(query.get("status", "302")), "text/plain", 0, Location=query["to"]
                    )
                elif path == "/page":
                    target = query["video"].replace('"', "%22")
                    body = (
                        "<!doctype html><html><head>"
                        f'<meta property="og:video" content="{target}">'
                        f'<meta property="og:video:url" content="{target}">'
                        "</head><body>"
                        f'<video src="{target}"><source src="{target}" type="video/mp4"></video>'
                        "</body></html>"
                    ).encode()
                    self._head(200, "text/html; charset=utf-8", len(body))
                    self.wfile.write(body)
                elif path == "/stall":
                    self._head(200, "video/mp4", 1024 * 1024)
                    self.wfile.write(sample_mp4(1024)[:64])
                    self.wfile.flush()
                    self._wait(30)
                elif path == "/trickle":
                    self._head(200, "video/mp4", 1024 * 1024)
                    data = sample_mp4(1024 * 1024)
                    self.wfile.write(data[:64])
                    self.wfile.flush()
                    sent = 64
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and self._wait(0.25):
                        self.wfile.write(data[sent : sent + 16])
                        self.wfile.flush()
                        sent += 16
                elif path.startswith("/hold/"):
                    released = origin._released.setdefault(path[6:], threading.Event())
                    size = 1536 * 1024
                    data = sample_mp4(size)
                    self._head(200, "video/mp4", size)
                    sent = 0
                    deadline = time.monotonic() + 60
                    while sent < size and time.monotonic() < deadline and not released.is_set():
                        self.wfile.write(data[sent : sent + 8192])
                        self.wfile.flush()
                        sent += 8192
                        if not self._wait(0.25):
                            break
                    self.close_connection = True
                elif path.startswith("/declares/"):
                    self._head(200, "video/mp4", int(path[10:]))
                    self.wfile.write(sample_mp4(1024)[:64])
                    self.wfile.flush()
                    self._wait(10)
                    self.close_connection = True
                elif path.startswith("/chunked/"):
                    size = int(path[9:])
                    self._head(200, "video/mp4", None, Transfer_Encoding="chunked")
                    data = sample_mp4(size)
                    for start in range(0, size, 64 * 1024):
                        block = data[start : start + 64 * 1024]
                        self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                elif path.startswith("/not-media/"):
                    body = NOT_MEDIA[path[11:]]
                    self._head(200, "video/mp4", len(body))
                    self.wfile.write(body)
                else:
                    self._head(404, "text/plain", 9)
                    self.wfile.write(b"not found")

        super().__init__(_QuietServer((host, 0), Handler))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def redirect(self, to: str, status: int = 302) -> str:
        return f"{self.url}/redirect?status={status}&to={quote(to, safe='')}"

    def page(self, video: str) -> str:
        return f"{self.url}/page?video={quote(video, safe='')}"

    def release(self, name: str) -> None:
        self._released.setdefault(name, threading.Event()).set()

    def close(self) -> None:
        self._stop.set()
        for event in self._released.values():
            event.set()
        super().close()
