"""Which addresses the worker may fetch from.

Users hand us URLs, so a URL is a request to make a connection on their behalf:
every address a source resolves to is checked here, with the port it would be reached on,
and the connection goes to exactly the addresses that were checked (see
:class:`GuardedResolver`). The rule itself is :class:`~mediaflow_libs.egress.EgressPolicy`.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from mediaflow_libs.egress import (
    PUBLIC_ONLY,
    EgressPolicy,
    Network,
    ip_literal,
    is_allowed,
    parse_cidrs,
)
from mediaflow_worker.errors import TaskFailure

__all__ = [
    "EgressPolicy",
    "GuardedResolver",
    "Network",
    "blocked",
    "check_address",
    "ip_literal",
    "is_allowed",
    "parse_cidrs",
]


def blocked(host: str) -> TaskFailure:
    """The one refusal: it names the host the user gave, never why (a private range, one of
    our servers, a denied port) nor anything about what listens there."""
    return TaskFailure("blocked_destination", f"The source {host} is not reachable from here.")


def check_address(host: str, port: int, policy: EgressPolicy = PUBLIC_ONLY) -> None:
    """Raise ``blocked_destination`` unless the literal address ``host`` may be fetched on
    ``port``."""
    if not policy.allows(ipaddress.ip_address(host), port):
        raise blocked(host)


class GuardedResolver(AbstractResolver):
    """Resolves through the default resolver and keeps only the addresses that may be
    fetched on the port asked for: aiohttp connects to what this returns, so no second
    lookup exists that an attacker's DNS could answer differently (no DNS rebinding)."""

    def __init__(self, policy: EgressPolicy = PUBLIC_ONLY) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            results = await self._inner.resolve(host, port, family)
        except (UnicodeError, ValueError) as exc:  # a name the resolver cannot even encode
            raise blocked(host) from exc
        allowed = [
            r for r in results if self._policy.allows(ipaddress.ip_address(r["host"]), r["port"])
        ]
        if not allowed:
            raise blocked(host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()
