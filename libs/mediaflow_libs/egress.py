"""Which addresses mediaflow may fetch user URLs from: the one rule the gateway (for literal
addresses in submitted URLs) and the worker (for every resolved address) both apply."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

# Cloud metadata endpoints: refused even inside an allowed range (an allow-list of
# 169.254.0.0/16 or fd00::/8 must not open them); only an allow entry naming exactly
# the one address does.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
# IPv6 prefixes that carry an IPv4 address in their low 32 bits (NAT64 well-known prefix).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_cidrs(value: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1/32"`` → networks; a bad entry raises ValueError naming it."""
    networks = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"EGRESS_ALLOW_CIDRS: {entry!r} is not a CIDR ({exc})") from exc
    return tuple(networks)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 spelling really points at (mapped, 6to4, Teredo, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    # IPv4-compatible ::a.b.c.d (deprecated, but some stacks still route it).
    if int(address) >> 32 == 0 and int(address) > 1:
        return IPv4Address(int(address))
    return None


def _is_public(address: Address) -> bool:
    if address in METADATA_ADDRESSES:
        return False
    # is_global is False for private, loopback, link-local, reserved, unspecified,
    # shared (100.64/10) and documentation ranges; multicast needs its own check.
    return address.is_global and not address.is_multicast


def is_allowed(address: Address, allow: Iterable[Network] = ()) -> bool:
    """True when the worker may connect to ``address``."""
    allow = tuple(allow)
    candidates: list[Address] = [address]
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates = [address, embedded]
    for candidate in candidates:
        for network in allow:
            if candidate.version != network.version or candidate not in network:
                continue
            if candidate not in METADATA_ADDRESSES or network.num_addresses == 1:
                return True
    return all(_is_public(c) for c in candidates)


def ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# What an ASCII host name may hold once IDNA has mapped it: a percent sign, a backslash or any
# other character here would be decoded or read differently by some client down the line.
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")


def host_name(host: str) -> str:
    """The ASCII name a resolver is asked for: IDNA-mapped (full-width letters and digits,
    ideographic full stops), lower-case, without the trailing dot; ValueError when ``host``
    is no host name (a percent-encoded one included)."""
    try:
        name = host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{host!r} is not a valid host name") from exc
    name = name.lower().rstrip(".")
    if not _HOST_NAME.match(name):
        raise ValueError(f"{host!r} is not a valid host name")
    return name


_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


def is_well_formed_host_name(name: str) -> bool:
    """Whether ``name`` (as :func:`host_name` returns it, and no address) can name a host:
    labels of 1 to 63 characters that neither start nor end with a hyphen, ``xn--`` labels
    that decode, at most 253 characters, and a last label that is no number (a URL parser
    reads such a host as an IPv4 address, which this one is not)."""
    labels = name.split(".")
    if len(name) > 253 or _NUMERIC_LABEL.match(labels[-1]):
        return False
    for label in labels:
        if not 1 <= len(label) <= 63 or label.startswith("-") or label.endswith("-"):
            return False
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                return False
    return True


def literal_address(host: str) -> Address | None:
    """The address a URL host spells literally, in any spelling a resolver would accept
    (``127.1``, ``0x7f.0.0.1``, ``2130706433``, ``[::ffff:127.0.0.1]``, ``10.0.0.1.``,
    full-width digits, ideographic full stops), else None."""
    found = ip_literal(host)
    if found is not None:
        return found
    try:
        # Checked as the resolver will see it, so that no spelling hides an address.
        name = host_name(host)
    except ValueError:
        return None
    found = ip_literal(name)
    if found is not None:
        return found
    try:
        # inet_aton accepts the legacy IPv4 spellings getaddrinfo would also resolve.
        return IPv4Address(socket.inet_aton(name))
    except (OSError, ValueError):
        return None
