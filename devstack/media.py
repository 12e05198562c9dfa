"""Sample media and a local origin to fetch it from (no network here beyond loopback)."""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 1024 * 1024


def write_sample_mp4(path: Path, size: int) -> str:
    """Write an ISO-BMFF file of exactly ``size`` bytes (an ``ftyp`` box, then one ``mdat``
    box of random bytes) and return its SHA-256. Sniffers see real MP4; nothing plays it."""
    ftyp = struct.pack(">I4s4sI4s4s", 24, b"ftyp", b"isom", 0x200, b"isom", b"mp41")
    mdat_size = size - len(ftyp)
    if mdat_size < 16:
        raise ValueError("a sample needs at least 40 bytes")
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        # A 64-bit box size keeps files over 4 GiB valid.
        header = ftyp + struct.pack(">I4sQ", 1, b"mdat", mdat_size)
        out.write(header)
        digest.update(header)
        remaining = size - len(header)
        while remaining:
            block = os.urandom(min(CHUNK, remaining))
            out.write(block)
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class LocalOrigin:
    """Serves a directory on 127.0.0.1 from a background thread."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        handler = partial(_QuietHandler, directory=str(directory))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LocalOrigin:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
