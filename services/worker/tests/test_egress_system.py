"""The worker never fetches the system's own servers, whatever EGRESS_ALLOW_CIDRS says, and no
Location or URL a source sends makes a fetch fail ``internal`` or reach a refused address."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devstack import stack
from mediaflow_worker.egress import EgressPolicy
from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.fetch import FetchLimits, open_http
from mediaflow_worker.resolve import Resolvers, open_media
from mediaflow_worker.settings import WorkerSettings
from services.worker.tests.test_hostile import Listeners, listeners, redirector

__all__ = ["listeners", "redirector"]

REQUIRED = {"service_secret": "x" * 32, "s3_access_key_id": "k", "s3_secret_access_key": "s"}


async def outcome(url: str, policy: EgressPolicy) -> TaskFailure | None:
    """What the worker makes of ``url``: None when it read media, else the failure."""
    limits = FetchLimits(policy, 1024 * 1024, 5, 1, 1, 5)
    try:
        async with (
            open_http(policy) as session,
            open_media(session, url, limits, Resolvers(), max_pages=2, max_page_bytes=65536) as m,
        ):
            async for _ in m.chunks:
                pass
    except TaskFailure as failure:
        return failure
    return None


def _pointing_at(setting: str, port: int) -> dict[str, object]:
    values: dict[str, object] = {
        "database_url": f"postgresql://u:p@127.0.0.1:{port}/db",
        "amqp_url": f"amqp://guest:guest@localhost:{port}/",
        "port": port,
    }
    return {setting: values.get(setting, f"http://127.0.0.1:{port}")}


SYSTEM_SETTINGS = [
    "s3_endpoint_url",
    "s3_public_endpoint_url",
    "database_url",
    "amqp_url",
    "auth_url",
    "auth_internal_url",
    "gateway_url",
    "notifier_url",
    "worker_url",
    "port",  # the worker's own probes and /metrics
]


@pytest.mark.parametrize("setting", SYSTEM_SETTINGS)
async def test_a_system_server_is_never_fetched_even_inside_the_allow_list(
    listeners: Listeners, redirector: str, setting: str
) -> None:
    p = listeners.port
    worker = WorkerSettings(
        **REQUIRED, egress_allow_cidrs="127.0.0.0/8", **_pointing_at(setting, p)
    )
    filer = f"http://127.0.0.1:{p}/buckets/media/tasks/a/b/1"
    urls = [
        filer,
        f"http://localhost:{p}/metrics",
        f"http://127.0.0.2:{p}/",
        f"http://[::ffff:127.0.0.1]:{p}/",
        f"http://[::1]:{p}/",
        f"{redirector}/?{urlencode({'to': filer})}",
        f"{redirector}/page?{urlencode({'to': filer})}",
    ]
    failures = [await outcome(url, worker.egress) for url in urls]
    assert [f.code if f else None for f in failures] == ["blocked_destination"] * len(urls)
    assert listeners.connections == []


async def test_a_refusal_tells_nothing_of_what_listens_there(listeners: Listeners) -> None:
    """An open port (a listener) and a closed one, both denied: the same words."""
    closed = stack.free_port()
    policy = EgressPolicy.parse(
        "127.0.0.1/32", f"127.0.0.1/32:{listeners.port},127.0.0.1/32:{closed}"
    )
    open_one = await outcome(f"http://127.0.0.1:{listeners.port}/", policy)
    closed_one = await outcome(f"http://127.0.0.1:{closed}/", policy)
    assert open_one is not None and closed_one is not None
    assert (open_one.code, open_one.message) == (closed_one.code, closed_one.message)
    assert open_one.code == "blocked_destination"
    assert listeners.connections == []


async def test_the_same_port_elsewhere_in_the_allow_list_is_fetched(listeners: Listeners) -> None:
    """The control: the listener's port, named by no setting, is reached."""
    worker = WorkerSettings(**REQUIRED, egress_allow_cidrs="127.0.0.0/8")
    failure = await outcome(f"http://127.0.0.2:{listeners.port}/", worker.egress)
    assert failure is not None and failure.code in ("source_unreachable", "source_timeout")
    assert listeners.connections


# --- generated Locations --------------------------------------------------------------------


class _Counter(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Counter6(_Counter):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def redirecting_origin(location: list[bytes]) -> Iterator[int]:
    """A server on 127.0.0.1 that answers anything with a 302 to ``location[0]``, raw."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            with contextlib.suppress(OSError):
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                self.wfile.write(
                    b"HTTP/1.1 302 Found\r\nLocation: " + location[0] + b"\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )

    server = _Counter(("127.0.0.1", 0), Handler)
    with _serving(server):
        yield int(server.server_address[1])


@contextlib.contextmanager
def canaries(port: int, accepts: list[str]) -> Iterator[None]:
    """Listeners on 127.0.0.1 (denied on this port), 127.0.0.2 and ::1 (never allowed)."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            accepts.append(str(self.request.getsockname()))

    with contextlib.ExitStack() as stack_:
        for host in ("127.0.0.1", "127.0.0.2"):
            stack_.enter_context(_serving(_Counter((host, port), Handler)))
        stack_.enter_context(_serving(_Counter6(("::1", port), Handler)))
        yield


def locations(canary: int, origin: int) -> st.SearchStrategy[bytes]:
    p = str(canary)
    hosts = st.sampled_from(
        [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.0.0.2",
            "[::ffff:127.0.0.1]",
            "[::1]",
            "[::]",
            "0",
            "0.0.0.0",
            "localhost",
            "LocalHost.",
            "\uff11\uff12\uff17.0.0.1",
            "%31%32%37.0.0.1",
            "127.0.0.1\\@127.0.0.2",
            f"127.0.0.1:{origin}\\@127.0.0.2",
            "u:p@127.0.0.1",
            "[::1%25lo]",
            "xn--",
            "a..b",
            "\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3",
            "[v1.x]",
            "",
        ]
    ) | st.text(max_size=12)
    ports = st.sampled_from(
        [p, "0" + p, "", p + "\\", "99999", "-1", f"{p}:{p}", p + " ", "0", f"{origin}"]
    ) | st.text(alphabet="0123456789:\\@[]", max_size=6)
    schemes = st.sampled_from(
        ["http://", "HTTP://", "https://", "//", "http:/", "http:", "ftp://", "file://", "", "\\\\"]
    )
    paths = st.sampled_from(["/", "/v.mp4", "", "?x", "#f", "/\\@127.0.0.1", "/%00"]) | st.text(
        max_size=10
    )
    built = st.tuples(schemes, hosts, st.sampled_from([":", "", "::", "\\:"]), ports, paths).map(
        "".join
    )
    return (
        built.map(lambda text: text.encode("utf-8", "surrogatepass"))
        | built.map(lambda text: text.encode("latin-1", "replace"))
        | st.binary(max_size=32)
    )


def test_no_location_makes_an_internal_error_or_reaches_a_refused_address() -> None:
    canary = stack.free_port()
    accepts: list[str] = []
    location = [b"/"]
    with canaries(canary, accepts), redirecting_origin(location) as origin:
        policy = EgressPolicy.parse("127.0.0.1/32", f"127.0.0.1/32:{canary}")
        start = f"http://127.0.0.1:{origin}/start"

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        )
        @given(locations(canary, origin))
        # Brackets in a user part before an empty host: yarl's parser fails with IndexError.
        @example(b"http://[x]@/")
        @example(b"//[x]@:1/")
        def check(value: bytes) -> None:
            location[0] = value
            # Anything but a TaskFailure would end the job ``internal``.
            failure = asyncio.run(outcome(start, policy))
            assert failure is not None
            assert failure.code != "internal", (value, failure)
            assert accepts == [], (value, accepts)

        check()
    assert accepts == []
