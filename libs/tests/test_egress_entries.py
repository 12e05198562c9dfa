"""EGRESS_ALLOW_CIDRS and EGRESS_DENY entries with ports, and the system's own servers,
which no allow entry opens."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from mediaflow_gateway.settings import GatewaySettings
from mediaflow_libs.egress import EgressPolicy, Entry, parse_entries
from mediaflow_worker.settings import WorkerSettings

REQUIRED = {"service_secret": "x" * 32, "s3_access_key_id": "k", "s3_secret_access_key": "s"}


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_entries_parse_with_and_without_ports() -> None:
    assert parse_entries(" 127.0.0.1/32:8888, [::1]/128:9000 ,10.0.0.0/8,, fe80::1, [::1]:80") == (
        Entry(ipaddress.ip_network("127.0.0.1/32"), 8888),
        Entry(ipaddress.ip_network("::1/128"), 9000),
        Entry(ipaddress.ip_network("10.0.0.0/8"), None),
        Entry(ipaddress.ip_network("fe80::1/128"), None),
        Entry(ipaddress.ip_network("::1/128"), 80),
    )


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1/32:", "127.0.0.1/32:0", "127.0.0.1/32:65536", "127.0.0.1:http", "[10.0.0.1]:80"],
)
def test_a_bad_entry_stops_the_service_at_start(value: str) -> None:
    for setting in ("egress_allow_cidrs", "egress_deny"):
        with pytest.raises(ValidationError) as caught:
            WorkerSettings(**REQUIRED, **{setting: value})
        assert setting.upper() in str(caught.value)
        with pytest.raises(ValidationError):
            GatewaySettings(**REQUIRED, **{setting: value})


def test_an_allow_entry_with_a_port_opens_only_that_port() -> None:
    policy = EgressPolicy.parse("127.0.0.1/32:9000, [::1]/128:9000")
    assert policy.allows(ip("127.0.0.1"), 9000)
    assert policy.allows(ip("::1"), 9000)
    assert not policy.allows(ip("127.0.0.1"), 9001)
    assert not policy.allows(ip("::1"), 80)
    assert policy.allows(ip("8.8.8.8"), 9001)  # public addresses need no entry


def test_deny_wins_over_allow_on_its_port_and_in_every_spelling() -> None:
    policy = EgressPolicy.parse("127.0.0.0/8", "127.0.0.1/32:8888, [::1]/128:8888, 8.8.8.8/32")
    assert policy.allows(ip("127.0.0.1"), 8889)
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::1", "0.0.0.0", "::"):
        assert not policy.allows(ip(address), 8888), address
    assert not policy.allows(ip("8.8.8.8"), 443)  # a deny entry without a port: every port


def test_the_system_servers_are_denied_whatever_the_allow_list_says() -> None:
    settings = WorkerSettings(
        **REQUIRED,
        egress_allow_cidrs="0.0.0.0/0, ::/0",
        s3_endpoint_url="http://127.0.0.1:18333",
        database_url="postgresql://u:p@127.0.0.1:15432,[::1]:15433/db",
        amqp_url="amqp://guest:guest@localhost/",
        auth_url="http://127.0.0.1:18101",
        auth_internal_url="http://127.0.0.1:18111",
        gateway_url="http://127.0.0.1:18102",
        notifier_url="http://127.0.0.1:18103",
        port=18104,
    )
    policy = settings.egress
    for port in (18333, 15432, 15433, 5672, 18101, 18111, 18102, 18103, 18104):
        for address in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "0.0.0.0"):
            assert not policy.allows(ip(address), port), (address, port)
    assert policy.allows(ip("127.0.0.1"), 18105)
    assert policy.allows(ip("10.0.0.1"), 18333)


def test_the_gateway_knows_the_literal_addresses_and_resolves_no_name() -> None:
    settings = GatewaySettings(
        **REQUIRED,
        egress_allow_cidrs="127.0.0.1/32",
        egress_deny="127.0.0.1/32:7000",
        s3_endpoint_url="http://127.0.0.1:18333",
        database_url="postgresql://u@db.invalid:5432/db",
    )
    policy = settings.egress
    assert not policy.allows(ip("127.0.0.1"), 18333)
    assert not policy.allows(ip("127.0.0.1"), 7000)
    assert not policy.allows(ip("127.0.0.1"), settings.port)
    assert policy.allows(ip("127.0.0.1"), 5432)  # db.invalid names no address it knows
