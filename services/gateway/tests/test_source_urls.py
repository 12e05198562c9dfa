"""URL checks of POST /v1/tasks that need no database."""

from __future__ import annotations

import pytest

from mediaflow_gateway.validation import validated_source_url
from mediaflow_libs.egress import EgressPolicy
from mediaflow_libs.problems import ProblemError


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://127.1/x",
        "http://2130706433/x",
        "http://0x7f.0.0.1/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00::1]/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
        "http://100.64.0.1/x",
        "http://[fe80::1]/x",
        "http://[fec0::1]/x",  # site-local (deprecated)
        "http://[::ffff:0:10.0.0.1]/x",  # SIIT IPv4-translated
        "http://[::ffff:0:a00:1]/x",
        "http://[64:ff9b:1::a00:1]/x",  # local-use NAT64
        "http://[3fff::1]/x",  # documentation
        "http://[5f00::1]/x",  # SRv6 SIDs
        # Literals hidden by normalisation: the gateway must see the address the worker's
        # resolver would be asked for.
        "http://10.0.0.1./x.mp4",
        "http://169.254.169.254./latest/meta-data/",
        "http://\uff11\uff10.\uff10.\uff10.\uff11/x.mp4",  # full-width digits
        "http://127\u30020\u30020\u30021/",  # ideographic full stops
        "http://169\uff0e254\uff0e169\uff0e254/",
        "http://0x7f.1./",
    ],
)
def test_literal_private_addresses_are_blocked(url: str) -> None:
    with pytest.raises(ProblemError) as refused:
        validated_source_url(url)
    assert refused.value.code == "blocked_destination"


def test_allow_list_opens_a_range_but_not_metadata() -> None:
    allow = EgressPolicy.parse("127.0.0.0/8, 169.254.0.0/16")
    assert (
        validated_source_url("http://127.0.0.1:9000/v.mp4", allow) == "http://127.0.0.1:9000/v.mp4"
    )
    with pytest.raises(ProblemError):
        validated_source_url("http://169.254.169.254/", allow)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTPS://Bücher.example/film.mp4", "https://xn--bcher-kva.example/film.mp4"),
        ("https://media.example", "https://media.example/"),
        ("https://media.example:8443/a?b=c#frag", "https://media.example:8443/a?b=c"),
        ("http://8.8.8.8/v.mp4", "http://8.8.8.8/v.mp4"),
        ("https://cdn_1.media.example/v.mp4", "https://cdn_1.media.example/v.mp4"),
        ("https://a-b.xn--bcher-kva.example:1/v", "https://a-b.xn--bcher-kva.example:1/v"),
        ("https://v.example.mp4/v", "https://v.example.mp4/v"),
    ],
)
def test_hosts_are_idna_normalised(url: str, normalised: str) -> None:
    assert validated_source_url(url) == normalised


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "https://a b.example/",
        "https://media.example:99999/",
        "http://",
        "https://user@media.example/",
        # Hosts no resolver would take as they are.
        "http://%6c%6f%63%61%6c%68%6f%73%74/v.mp4",  # percent-encoded "localhost"
        "http://media.example%2ecom/v.mp4",
        "https://\udfff/v.mp4",  # lone surrogates: no character, no URL
        "https://media.example.com/\ud800.mp4",
        "https://media..example.com/v.mp4",
        # Hosts and ports that cannot name a source: refused before anything is charged.
        "https://media.example:0/v.mp4",
        "https://256.0.0.1/v.mp4",  # ends in a number, so an IPv4 address, and no valid one
        "https://1.2.3.4.5/v.mp4",
        "https://media.example.123/v.mp4",
        "https://media.0x1f/v.mp4",
        "https://xn--/v.mp4",  # punycode that does not decode
        "https://xn--zz.example/v.mp4",
        "https://-media.example/v.mp4",
        "https://media-.example/v.mp4",
        "https://" + "a" * 64 + ".example/v.mp4",
        "https://" + "a." * 127 + "example/v.mp4",
    ],
)
def test_malformed_urls_are_invalid(url: str) -> None:
    with pytest.raises(ProblemError) as refused:
        validated_source_url(url)
    assert refused.value.code == "invalid_url"


def test_a_normalised_host_is_stored_as_the_resolver_sees_it() -> None:
    allow = EgressPolicy.parse("127.0.0.1/32")
    assert validated_source_url("http://\uff11\uff12\uff17.0.0.1./v.mp4", allow) == (
        "http://127.0.0.1/v.mp4"
    )
    assert validated_source_url("http://media.example.com./v.mp4") == (
        "http://media.example.com/v.mp4"
    )
