"""The SSRF corpus through ``POST /v1/tasks``.

A literal forbidden address, in any spelling, is refused at submit (422 ``blocked_destination``)
and changes nothing. A name that resolves to one, a redirect to one or a page that names one is
accepted, then the task fails ``blocked_destination``, refunded once, nothing stored, and no
connection reaches the forbidden address (canaries listen there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import media
from tests.hostile.sources import Canary, Origin
from tests.hostile.support import User, World, assert_problem, sign_up

# Hosts spelling forbidden addresses (the default stack allows 127.0.0.1 only).
FORBIDDEN_LITERALS = [
    # RFC 1918, in dotted, short, decimal, octal and hex spellings.
    "10.0.0.1",
    "10.1",
    "167772161",
    "012.0.0.1",
    "0xa.0.0.1",
    "0x0a000001",
    "0XA.0X0.0X0.0X1",
    "012.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "0xac.16.0.1",
    "2886729729",
    "192.168.1.1",
    "3232235777",
    "0300.0250.0001.0001",
    "0xc0a80101",
    "192.168.257",
    # Loopback other than 127.0.0.1.
    "127.0.0.2",
    "127.2",
    "2130706434",
    "0x7f000002",
    "0177.0.0.2",
    "0x7f.0.0.2",
    "127.255.255.254",
    "127.000.000.002",
    # This host, unspecified.
    "0",
    "0.0.0.0",
    "0x0",
    "00",
    "0.0",
    # Link-local and cloud metadata.
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "0xa9.0xfe.0xa9.0xfe",
    "169.254.170.2",
    "100.100.100.200",
    "169.254.0.1",
    # Shared address space, benchmarking, documentation, IETF, reserved, broadcast, multicast.
    "100.64.0.1",
    "198.18.0.1",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "192.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "224.0.0.1",
    "239.255.255.250",
    "4294967295",
    # IPv6: loopback, unspecified, link-local (with zone), ULA, metadata, multicast, documentation.
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[0000::0001]",
    "[::]",
    "[fe80::1]",
    "[fe80::1%25eth0]",
    "[fc00::1]",
    "[fd00::1]",
    "[fd00:ec2::254]",
    "[fec0::1]",  # site-local (deprecated)
    "[ff02::1]",
    "[ff05::1:3]",
    "[2001:db8::1]",
    "[3fff::1]",
    "[100::1]",
    "[5f00::1]",
    "[::FFFF:0:0]",
    # IPv4 inside IPv6: mapped (both spellings), compatible, SIIT, NAT64, 6to4, Teredo.
    "[::ffff:10.0.0.1]",
    "[::ffff:a00:1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[::ffff:127.0.0.2]",
    "[0:0:0:0:0:ffff:192.168.1.1]",
    "[::10.0.0.1]",
    "[::127.0.0.2]",
    "[::ffff:0:10.0.0.1]",
    "[::ffff:0:a00:1]",
    "[::ffff:0:127.0.0.2]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b::10.0.0.1]",
    "[64:ff9b:1::a00:1]",
    "[2002:a9fe:a9fe::]",
    "[2002:a00:1::1]",
    "[2001:0:4136:e378:8000:63bf:f5ff:fffe]",
]
# The same hosts with ports, paths and the other scheme.
DECORATED = [
    "http://10.0.0.1:8080/x.mp4",
    "https://10.0.0.1/x.mp4",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.169.254:80/computeMetadata/v1/?recursive=true",
    "http://[::1]:8080/",
    "https://[fd00:ec2::254]:443/latest/api/token",
    "http://0x7f000002:6379/",
    "HTTP://192.168.1.1/X.MP4",
    "http://10.0.0.1/#@media.example.com",
    "http://10.0.0.1/?@media.example.com",
    "http://10.0.0.1/@media.example.com",
]
# Spellings that only become a literal once normalised (a trailing dot, full-width digits,
# ideographic full stops): the gateway must see the address the worker would.
NORMALISED = [
    "http://10.0.0.1./x.mp4",
    "http://169.254.169.254./latest/meta-data/",
    "http://\uff11\uff10.\uff10.\uff10.\uff11/x.mp4",
    "http://10\u30020\u30020\u30021/x.mp4",
    "http://169\uff0e254\uff0e169\uff0e254/",
]
# 127.0.0.1 in every spelling: allowed by the default stack, forbidden by the hostile one.
LOOPBACK_ONE = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "017700000001",
    "0x7f.1",
    "0177.0.0.1",
    "127.0.1",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[::ffff:0:127.0.0.1]",
    "[64:ff9b::7f00:1]",
]


@pytest.fixture(scope="module")
async def ssrf_user(world: World) -> User:
    return await sign_up(world.url, "ssrf")


async def _refused_at_submit(world: World, user: User, url: str) -> None:
    before = await world.snapshot(user)
    async with world.client() as client:
        response = await client.post("/v1/tasks", json={"url": url}, headers=user.bearer)
    assert_problem(response, 422, "blocked_destination")
    assert await world.snapshot(user) == before, f"{url} changed something"


@pytest.mark.parametrize("host", FORBIDDEN_LITERALS)
async def test_a_literal_forbidden_address_is_refused_at_submit(
    world: World, ssrf_user: User, host: str
) -> None:
    await _refused_at_submit(world, ssrf_user, f"http://{host}/video.mp4")


@pytest.mark.parametrize("url", DECORATED)
async def test_a_decorated_forbidden_url_is_refused_at_submit(
    world: World, ssrf_user: User, url: str
) -> None:
    await _refused_at_submit(world, ssrf_user, url)


@pytest.mark.parametrize(
    "url",
    NORMALISED,
    ids=[
        "trailing-dot",
        "metadata-trailing-dot",
        "fullwidth",
        "ideographic-stop",
        "fullwidth-stop",
    ],
)
async def test_a_literal_hidden_by_normalisation_is_refused_at_submit(
    world: World, ssrf_user: User, url: str
) -> None:
    await _refused_at_submit(world, ssrf_user, url)


@pytest.mark.parametrize("host", LOOPBACK_ONE)
async def test_loopback_is_refused_at_submit_where_it_is_not_allowed(
    hostile: World, hostile_user: User, host: str
) -> None:
    await _refused_at_submit(hostile, hostile_user, f"http://{host}:8080/video.mp4")


async def test_the_allowed_origin_works(
    world: World, ssrf_user: User, origin: tuple[str, Path]
) -> None:
    """The control: the default stack fetches from 127.0.0.1, so the refusals above are about
    the addresses, not a broken stack."""
    base_url, directory = origin
    media.write_sample_mp4(directory / "hostile-control.mp4", 4096)
    async with world.client() as client:
        response = await client.post(
            "/v1/tasks", json={"url": f"{base_url}/hostile-control.mp4"}, headers=ssrf_user.bearer
        )
    assert response.status_code == 202, response.text
    task = await world.wait_terminal(ssrf_user, response.json()["task"]["id"])
    assert task["status"] == "succeeded", task


# --- resolved at the worker (hostile stack: only 127.0.0.2 may be fetched) ------------------


@pytest.fixture(scope="module")
async def resolving_user(hostile: World) -> User:
    return await sign_up(hostile.url, "ssrf-worker")


def _names(canary: Canary) -> list[str]:
    port = canary.port
    return [
        f"http://localhost:{port}/video.mp4",
        f"http://LOCALHOST:{port}/video.mp4",
        f"http://localhost.:{port}/video.mp4",
        f"http://vm:{port}/video.mp4",
        f"http://runsc:{port}/video.mp4",
        # "localhost" in circled letters, which IDNA maps to ASCII
        f"http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3:{port}/video.mp4",
        f"http://%6c%6f%63%61%6c%68%6f%73%74:{port}/video.mp4",  # percent-encoded
    ]


NAME_IDS = ["localhost", "upper", "trailing-dot", "vm", "runsc", "circled", "percent-encoded"]


@pytest.mark.parametrize("index", range(len(NAME_IDS)), ids=NAME_IDS)
async def test_a_name_resolving_to_a_forbidden_address_fails_blocked(
    hostile: World, resolving_user: User, no_canary_hit: dict[str, Canary], index: int
) -> None:
    url = _names(no_canary_hit["127.0.0.1"])[index]
    # A gateway that can tell the name is local may refuse it at submit instead.
    refusable = frozenset({"blocked_destination", "invalid_url"})
    await hostile.submit_and_fail(resolving_user, url, "blocked_destination", refusable=refusable)


def _redirect_targets(canaries: dict[str, Canary]) -> dict[str, str]:
    one, three, six = canaries["127.0.0.1"], canaries["127.0.0.3"], canaries["::1"]
    return {
        "loopback": f"{one.url}/video.mp4",
        "loopback-3": f"{three.url}/video.mp4",
        "ipv6-loopback": f"{six.url}/video.mp4",
        "localhost": f"http://localhost:{one.port}/video.mp4",
        "mapped": f"http://[::ffff:127.0.0.1]:{one.port}/video.mp4",
        "decimal": f"http://2130706433:{one.port}/video.mp4",
        "hex-short": f"http://0x7f.1:{one.port}/video.mp4",
        "octal": f"http://0177.0.0.3:{three.port}/video.mp4",
        "private": "http://10.0.0.1/video.mp4",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "metadata-v6": "http://[fd00:ec2::254]/latest/meta-data/",
        "site-local": "http://[fec0::1]/video.mp4",
        "siit": f"http://[::ffff:0:127.0.0.1]:{one.port}/video.mp4",
        "siit-hex": "http://[::ffff:0:a00:1]/video.mp4",
        "protocol-relative": f"//localhost:{one.port}/video.mp4",
        "file": "file:///etc/passwd",
        "gopher": f"gopher://127.0.0.1:{one.port}/_GET%20/",
        "ftp": f"ftp://127.0.0.1:{one.port}/video.mp4",
    }


REDIRECT_IDS = [
    "loopback",
    "loopback-3",
    "ipv6-loopback",
    "localhost",
    "mapped",
    "decimal",
    "hex-short",
    "octal",
    "private",
    "metadata",
    "metadata-v6",
    "site-local",
    "siit",
    "siit-hex",
    "protocol-relative",
    "file",
    "gopher",
    "ftp",
]


@pytest.mark.parametrize("target", REDIRECT_IDS)
async def test_a_redirect_to_a_forbidden_address_fails_blocked(
    hostile: World,
    hostile_origin: Origin,
    resolving_user: User,
    no_canary_hit: dict[str, Canary],
    target: str,
) -> None:
    url = hostile_origin.redirect(_redirect_targets(no_canary_hit)[target])
    await hostile.submit_and_fail(resolving_user, url, "blocked_destination")


@pytest.mark.parametrize("status", [301, 303, 307, 308])
async def test_every_redirect_status_is_checked(
    hostile: World,
    hostile_origin: Origin,
    resolving_user: User,
    no_canary_hit: dict[str, Canary],
    status: int,
) -> None:
    url = hostile_origin.redirect(f"{no_canary_hit['127.0.0.1'].url}/video.mp4", status)
    await hostile.submit_and_fail(resolving_user, url, "blocked_destination")


async def test_a_redirect_chain_is_checked_at_every_hop(
    hostile: World, hostile_origin: Origin, resolving_user: User, no_canary_hit: dict[str, Canary]
) -> None:
    last = hostile_origin.redirect(f"{no_canary_hit['::1'].url}/video.mp4")
    url = hostile_origin.redirect(hostile_origin.redirect(last, 307), 301)
    await hostile.submit_and_fail(resolving_user, url, "blocked_destination")


@pytest.mark.parametrize("target", ["loopback", "ipv6-loopback", "localhost", "metadata"])
async def test_a_page_naming_media_at_a_forbidden_address_fails_blocked(
    hostile: World,
    hostile_origin: Origin,
    resolving_user: User,
    no_canary_hit: dict[str, Canary],
    target: str,
) -> None:
    url = hostile_origin.page(_redirect_targets(no_canary_hit)[target])
    await hostile.submit_and_fail(resolving_user, url, "blocked_destination")


async def test_the_hostile_origin_works(
    hostile: World, hostile_origin: Origin, resolving_user: User
) -> None:
    """The control: the allowed origin's media, directly, through a redirect and through a page."""
    async with hostile.client() as client:
        for url in (
            f"{hostile_origin.url}/media.mp4",
            hostile_origin.redirect(f"{hostile_origin.url}/media.mp4"),
            hostile_origin.page(f"{hostile_origin.url}/media.mp4"),
        ):
            response = await client.post(
                "/v1/tasks", json={"url": url}, headers=resolving_user.bearer
            )
            assert response.status_code == 202, response.text
            task = await hostile.wait_terminal(resolving_user, response.json()["task"]["id"])
            assert task["status"] == "succeeded", (url, task)


async def test_the_canaries_see_a_worker_that_reaches_them(
    world: World, ssrf_user: User, canaries: dict[str, Canary]
) -> None:
    """The control for every canary check: the default stack may fetch from 127.0.0.1, and
    when it does, the canary there records it."""
    canary = canaries["127.0.0.1"]
    before = len(canary.hits)
    async with world.client() as client:
        response = await client.post(
            "/v1/tasks", json={"url": f"{canary.url}/control.mp4"}, headers=ssrf_user.bearer
        )
    assert response.status_code == 202, response.text
    task = await world.wait_terminal(ssrf_user, response.json()["task"]["id"])
    assert task["status"] == "succeeded", task
    assert canary.hits[before:] == ["/control.mp4"]
