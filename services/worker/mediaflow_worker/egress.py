"""Which addresses the worker may fetch from.

Users hand us URLs, so a URL is a request to make a connection on their behalf:
every address a source resolves to is checked here, and the connection goes to
exactly the addresses that were checked (see :class:`GuardedResolver`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from mediaflow_libs.egress import Network, ip_literal, is_allowed, parse_cidrs
from mediaflow_worker.errors import TaskFailure

__all__ = ["GuardedResolver", "Network", "check_address", "ip_literal", "is_allowed", "parse_cidrs"]


def check_address(host: str, allow: Iterable[Network] = ()) -> None:
    """Raise ``blocked_destination`` unless the literal address ``host`` may be fetched."""
    address = ipaddress.ip_address(host)
    if not is_allowed(address, allow):
        raise TaskFailure(
            "blocked_destination", f"The source address {host} is not reachable from here."
        )


class GuardedResolver(AbstractResolver):
    """Resolves through the default resolver and keeps only the addresses that may be
    fetched: aiohttp connects to what this returns, so no second lookup exists that an
    attacker's DNS could answer differently (no DNS rebinding)."""

    def __init__(self, allow: Iterable[Network] = ()) -> None:
        self._allow = tuple(allow)
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if is_allowed(ipaddress.ip_address(r["host"]), self._allow)]
        if not allowed:
            refused = ", ".join(sorted({r["host"] for r in results}))
            raise TaskFailure(
                "blocked_destination",
                f"{host} resolves to {refused}, which is not reachable from here.",
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()
