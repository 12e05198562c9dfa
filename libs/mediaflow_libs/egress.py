"""Which addresses mediaflow may fetch user URLs from: the one rule the gateway (for literal
addresses in submitted URLs) and the worker (for every resolved address) both apply."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
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
# IPv6 forms that stand for exactly one IPv4 address, turned into it by the host's own stack
# or a public translator: they are as reachable as that address, and judged by it alone.
_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 2765)
_IPV4_COMPATIBLE = IPv6Network("::/96")  # deprecated, but some stacks still route it
_NAT64 = IPv6Network("64:ff9b::/96")  # the well-known prefix (RFC 6052)
_STANDS_FOR_IPV4 = (_IPV4_MAPPED, _IPV4_TRANSLATED, _IPV4_COMPATIBLE, _NAT64)
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")  # a network's own translator (RFC 8215)

# The entries of IANA's IPv6 Special-Purpose Address Registry that are not globally reachable
# ("N/A" counted as not), and the deprecated site-local range. Written out because
# ipaddress.is_global knows the registry only as of its Python release.
_IPV6_NOT_GLOBAL = tuple(
    IPv6Network(cidr)
    for cidr in (
        "::1/128",  # loopback
        "::/128",  # unspecified
        "::ffff:0:0/96",  # IPv4-mapped (never reached: judged by its IPv4 address)
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation
        "100::/64",  # discard-only
        "100:0:0:1::/64",  # dummy prefix
        # IETF protocol assignments: Teredo, benchmarking, ORCHID, and anycast services
        # (PCP, TURN, AMT) that answer at the nearest server, often on the local network.
        "2001::/23",
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: reachable only through whatever relay is nearest
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing (SRv6) SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still routed by some networks)
        "ff00::/8",  # multicast
    )
)
# IANA allocates unicast from 2000::/3 only; everything else is reserved.
_GLOBAL_UNICAST = IPv6Network("2000::/3")


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


# An entry of EGRESS_ALLOW_CIDRS or EGRESS_DENY is a CIDR, optionally with a port after a
# colon; an IPv6 address with a port is bracketed: ``127.0.0.1/32:8888``, ``[::1]/128:9000``.


@dataclass(frozen=True)
class Entry:
    """A network, and the one port it is about (None: every port)."""

    network: Network
    port: int | None = None

    def matches(self, address: Address, port: int) -> bool:
        return (
            address.version == self.network.version
            and address in self.network
            and (self.port is None or self.port == port)
        )

    def __str__(self) -> str:
        if self.port is None:
            return str(self.network)
        spelled = f"[{self.network}]" if self.network.version == 6 else str(self.network)
        return f"{spelled}:{self.port}"


def parse_entries(value: str, setting: str = "EGRESS_ALLOW_CIDRS") -> tuple[Entry, ...]:
    """``"10.0.0.0/8, 127.0.0.1/32:9000, [::1]/128:9000"`` → entries; a bad entry raises
    ValueError naming ``setting`` and the entry."""
    entries = []
    for text in (part.strip() for part in value.split(",")):
        if not text:
            continue
        try:
            cidr, port_text = _split_entry(text)
            network = ipaddress.ip_network(cidr, strict=False)
            port = None if port_text is None else int(port_text)
            if port is not None and not 1 <= port <= 65535:
                raise ValueError(f"port {port} is out of range")
        except ValueError as exc:
            raise ValueError(f"{setting}: {text!r} is not a CIDR ({exc})") from exc
        entries.append(Entry(network, port))
    return tuple(entries)


def _split_entry(text: str) -> tuple[str, str | None]:
    """``"[::1]/128:9000"`` → ``("::1/128", "9000")``; ``"10.0.0.0/8"`` → ``(…, None)``."""
    if text.startswith("["):
        inside, bracket, tail = text[1:].partition("]")
        prefix, colon, port_text = tail.partition(":")
        if not bracket or (prefix and not prefix.startswith("/")) or ":" not in inside:
            raise ValueError("expected [IPv6 address]/PREFIX:PORT")
        cidr, port = inside + prefix, port_text if colon else None
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 without brackets has no port
        cidr, port = text.split(":")
    else:
        cidr, port = text, None
    if port is not None and not port.isdigit():
        raise ValueError(f"{port!r} is not a port")
    return cidr, port


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 spelling carries (mapped, SIIT, compatible, NAT64, 6to4,
    Teredo), else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    low_bits = IPv4Address(int(address) & 0xFFFFFFFF)
    # The local-use NAT64 prefix may also be used with shorter lengths that put the IPv4
    # address elsewhere; the whole prefix is refused anyway.
    if address in _IPV4_TRANSLATED or address in _NAT64 or address in _NAT64_LOCAL:
        return low_bits
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are no IPv4 address
        return low_bits
    return None


def _is_public(address: Address) -> bool:
    if address in METADATA_ADDRESSES:
        return False
    if isinstance(address, IPv4Address):
        # is_global is False for private, loopback, link-local, reserved, unspecified,
        # shared (100.64/10) and documentation ranges; multicast needs its own check.
        return address.is_global and not address.is_multicast
    if _embedded_ipv4(address) is not None and any(address in n for n in _STANDS_FOR_IPV4):
        return True  # its IPv4 address is judged too, as the other candidate
    return address in _GLOBAL_UNICAST and not any(address in n for n in _IPV6_NOT_GLOBAL)


def is_allowed(address: Address, allow: Iterable[Network] = ()) -> bool:
    """True when the worker may connect to ``address``."""
    allow = tuple(allow)
    candidates: list[Address] = [address]
    if isinstance(address, IPv6Address):
        # Judged without its zone, which names an interface: fd00:ec2::254%eth0 is still
        # the metadata address.
        address = IPv6Address(int(address))
        embedded = _embedded_ipv4(address)
        candidates = [address] if embedded is None else [address, embedded]
    for candidate in candidates:
        for network in allow:
            if candidate.version != network.version or candidate not in network:
                continue
            if candidate not in METADATA_ADDRESSES or network.num_addresses == 1:
                return True
    return all(_is_public(c) for c in candidates)


# Connecting to the unspecified address reaches this host's own listeners (Linux treats it as
# loopback): for the deny list it stands for the loopback addresses.
_THIS_HOST = (IPv4Address("127.0.0.1"), IPv6Address("::1"))


def _deny_candidates(address: Address) -> list[Address]:
    """The addresses a connection to ``address`` may reach: itself without its zone, the
    IPv4 address an IPv6 spelling carries, and loopback for the unspecified address."""
    if isinstance(address, IPv6Address):
        address = IPv6Address(int(address))
        embedded = _embedded_ipv4(address)
        found: list[Address] = [address] if embedded is None else [address, embedded]
    else:
        found = [address]
    if any(a.is_unspecified for a in found):
        found.extend(_THIS_HOST)
    return found


@dataclass(frozen=True)
class EgressPolicy:
    """The whole egress rule: an address and port may be fetched when no deny entry matches
    it (deny always wins) and it is public or in an allow entry that covers this port.

    ``deny`` holds EGRESS_DENY and the system's own servers (:func:`system_entries`)."""

    allow: tuple[Entry, ...] = ()
    deny: tuple[Entry, ...] = ()

    @classmethod
    def parse(cls, allow: str = "", deny: str = "") -> EgressPolicy:
        return cls(parse_entries(allow), parse_entries(deny, "EGRESS_DENY"))

    def with_deny(self, more: Iterable[Entry]) -> EgressPolicy:
        return EgressPolicy(self.allow, tuple(dict.fromkeys((*self.deny, *more))))

    def allows(self, address: Address, port: int) -> bool:
        candidates = _deny_candidates(address)
        if any(entry.matches(c, port) for entry in self.deny for c in candidates):
            return False
        networks = [e.network for e in self.allow if e.port is None or e.port == port]
        return is_allowed(address, networks)


# No allow and no deny entries: public addresses only.
PUBLIC_ONLY = EgressPolicy()

DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "postgres": 5432,
    "postgresql": 5432,
    "amqp": 5672,
    "amqps": 5671,
}
_LOOPBACK_V4 = IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = IPv6Network("::1/128")


def endpoints(url: str) -> list[tuple[str, int]]:
    """The (host, port) pairs a server URL or DSN names (a PostgreSQL DSN may name several
    hosts); [] for what names no TCP server (a Unix socket, an unparsable value)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return []
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    default = DEFAULT_PORTS.get(scheme.lower())
    found = []
    for part in netloc.split(","):
        host, port = _host_port(part, default)
        if host and port:
            found.append((host, port))
    return found


def _host_port(text: str, default: int | None) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        return host, default
    return (host, int(port_text)) if port_text.isdigit() else ("", None)


def entries_for(address: Address, port: int) -> list[Entry]:
    """Deny entries for a server of ours at ``address``: one on loopback or bound to every
    address is reached through any loopback address, so the whole loopback range is denied
    on that port."""
    if address.is_loopback or address.is_unspecified:
        return [Entry(_LOOPBACK_V4, port), Entry(_LOOPBACK_V6, port)]
    bits = 32 if address.version == 4 else 128
    return [Entry(ipaddress.ip_network(f"{address}/{bits}"), port)]


def system_entries(urls: Iterable[str], *, resolve: bool) -> tuple[Entry, ...]:
    """Deny entries for the system's own servers named by ``urls``. With ``resolve``, host
    names are looked up (once, at start); without, only literal addresses count (the gateway
    does no DNS at submit). A name that does not resolve is left out."""
    found: list[Entry] = []
    for url in urls:
        for host, port in endpoints(url):
            for address in _addresses(host, resolve):
                found.extend(entries_for(address, port))
    return tuple(dict.fromkeys(found))


def _addresses(host: str, resolve: bool) -> list[Address]:
    literal = literal_address(host)
    if literal is not None:
        if literal.is_unspecified and resolve:
            # A server bound to every address is also reached at this host's own addresses.
            return [literal, *_addresses(socket.gethostname(), resolve)]
        return [literal]
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


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
