"""The benchmarks' media origin: serves a directory on 127.0.0.1 (the stdlib's threaded
server, as ``python -m http.server``), a file's body by ``sendfile`` as a real web server
would (the origin shares the machine's cores with what is measured: a copy loop in Python
here would be CPU no real origin takes from the worker), and paces a response to ``rate``
KiB a second when the URL asks (``/clip.mp4?rate=64``), so that a task lasts as long as a
real slow source.

Run: ``python bench/origin.py DIRECTORY PORT``.
"""

from __future__ import annotations

import sys
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

PACED_CHUNK = 16 * 1024


class Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:  # type: ignore[override]
        rate = parse_qs(urlsplit(self.path).query).get("rate")
        if not rate:
            self.connection.sendfile(source)
            return
        per_second = float(rate[0]) * 1024
        started, sent = time.monotonic(), 0
        while chunk := source.read(PACED_CHUNK):
            outputfile.write(chunk)
            sent += len(chunk)
            ahead = started + sent / per_second - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def main() -> None:
    directory, port = sys.argv[1], int(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(Handler, directory=directory))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
