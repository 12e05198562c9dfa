"""A media origin for ``bench/resume_drops.py``: serves a directory on 127.0.0.1 with
``ETag``, ``Accept-Ranges`` and ``Range``/``If-Range`` (``bytes=N-``), and, when the URL
asks (``/source.mp4?drops=3&run=a``), closes the connection once at each of that many
evenly spaced offsets of the file, per ``run``: a source that breaks off and honours ranges.

Run: ``python bench/drop_origin.py DIRECTORY PORT``.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CHUNK = 256 * 1024
_dropped: dict[str, int] = {}  # run → drops done
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args: object, directory: str, **kwargs: object) -> None:
        self.directory = Path(directory)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = self.directory / url.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        query = parse_qs(url.query)
        drops = int(query.get("drops", ["0"])[0])
        run = query.get("run", [""])[0]
        stat = path.stat()
        size = stat.st_size
        etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
        start = 0
        wanted = self.headers.get("Range", "")
        same = self.headers.get("If-Range", etag) == etag
        if same and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[6:-1])
        with _lock:
            done = _dropped.get(run, 0)
        # The next drop point ahead of this answer's start, if any are left.
        points = [size * (n + 1) // (drops + 1) for n in range(drops)]
        cut = next((p for p in points[done:] if p > start), None)
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size - start))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        with path.open("rb") as source:
            source.seek(start)
            at = start
            while at < size:
                end = min(at + CHUNK, size if cut is None else cut)
                self.wfile.write(source.read(end - at))
                at = end
                if cut is not None and at == cut:
                    with _lock:
                        _dropped[run] = _dropped.get(run, 0) + 1
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return


def main() -> None:
    directory, port = sys.argv[1], int(sys.argv[2])
    handler = partial(Handler, directory=os.fspath(directory))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
