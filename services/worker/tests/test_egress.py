from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from mediaflow_worker.egress import EgressPolicy, GuardedResolver, is_allowed, parse_cidrs
from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.settings import WorkerSettings

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:7f00:1",  # the same, written in hex
    "::127.0.0.1",  # IPv4-compatible (deprecated) loopback
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 wrapping 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64, refused whatever it wraps
    "64:ff9b:1::808:808",
    "::ffff:0:10.0.0.1",  # SIIT IPv4-translated
    "::ffff:0:a00:1",  # the same, written in hex
    "::ffff:0:127.0.0.1",
    "::ffff:0:0",  # SIIT 0.0.0.0
    "2002:808:808::",  # 6to4 and Teredo go through whichever relay is nearest
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "169.254.169.254",  # cloud metadata
    "::ffff:169.254.169.254",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba metadata
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "fd00::1",
    "fc00::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",  # site-local (deprecated)
    "fefe::1",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "ff0e::1",  # global-scope multicast is still multicast
    "192.0.2.1",  # documentation
    "2001:db8::1",
    "3fff::1",  # documentation, the newer range
    "100::1",  # discard-only
    "100:0:0:1::1",  # dummy prefix
    "2001:2::1",  # benchmarking
    "2001:10::1",  # deprecated ORCHID
    "2001:1::1",  # PCP anycast: the nearest server, often the local router
    "5f00::1",  # SRv6 SIDs
    "4000::1",  # outside 2000::/3, reserved
    "::2",  # IPv4-compatible 0.0.0.2
    "198.18.0.1",  # benchmarking
    "240.0.0.1",  # reserved
    "255.255.255.255",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2620:4f:8000::1",  # AS112, in the registry but globally reachable
    "::ffff:8.8.8.8",
    "::ffff:0:8.8.8.8",
    "::8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", REFUSED)
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert not is_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("allow", "address", "allowed"),
    [
        ("127.0.0.1/32", "127.0.0.1", True),
        ("127.0.0.1/32", "::ffff:127.0.0.1", True),  # the same address in another spelling
        ("127.0.0.1/32", "127.0.0.2", False),
        ("127.0.0.1/32", "::1", False),
        ("10.0.0.0/8, 192.168.0.0/16", "10.20.30.40", True),
        ("10.0.0.0/8, 192.168.0.0/16", "192.168.7.7", True),
        ("10.0.0.0/8", "172.16.0.1", False),
        ("fd00::/8", "fd12::1", True),
        ("::1/128", "::1", True),
        ("fec0::/10", "fec0::1", True),
        ("10.0.0.0/8", "::ffff:0:a00:1", True),  # SIIT, judged by its IPv4 address
        ("10.0.0.0/8", "fec0::a00:1", False),
        # Metadata endpoints stay closed inside a broad allowed range ...
        ("169.254.0.0/16", "169.254.169.254", False),
        ("169.254.0.0/16", "169.254.1.1", True),
        ("fd00::/8", "fd00:ec2::254", False),
        ("fd00::/8", "fd00:ec2::254%eth0", False),  # a zone changes nothing
        # ... and open only when named exactly.
        ("169.254.169.254/32", "169.254.169.254", True),
    ],
)
def test_the_allow_list_opens_exactly_what_it_names(
    allow: str, address: str, allowed: bool
) -> None:
    assert is_allowed(ipaddress.ip_address(address), parse_cidrs(allow)) is allowed


def test_cidrs_parse_from_a_comma_separated_list() -> None:
    assert parse_cidrs(" 127.0.0.1/32 ,10.0.0.0/8,,") == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert parse_cidrs("") == ()


@pytest.mark.parametrize("value", ["banana", "10.0.0.0/33", "127.0.0.1/32,300.1.1.1/8"])
def test_an_invalid_cidr_stops_the_worker_at_start(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WorkerSettings(
            egress_allow_cidrs=value,
            service_secret="x" * 32,
            s3_access_key_id="key",
            s3_secret_access_key="secret",
        )
    assert "EGRESS_ALLOW_CIDRS" in str(caught.value)


async def test_the_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    resolver = GuardedResolver()
    try:
        with pytest.raises(TaskFailure) as caught:
            await resolver.resolve("localhost", 80)
        assert caught.value.code == "blocked_destination"
    finally:
        await resolver.close()


async def test_the_resolver_returns_only_allowed_addresses() -> None:
    resolver = GuardedResolver(EgressPolicy.parse("127.0.0.1/32"))
    try:
        results = await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    assert results
    assert {r["host"] for r in results} == {"127.0.0.1"}
