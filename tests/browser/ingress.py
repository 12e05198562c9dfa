"""Turning the second ingress's ``/v1/events`` off and on, as a proxy that blocks streams would."""

from __future__ import annotations

import os
import signal

import httpx

from devstack import stack

BLOCK_EVENTS = "return 503;"


def set_events_blocked(config: stack.StackConfig, blocked: bool) -> None:
    """Re-render the ingress with ``/v1/events`` refused or not, and reload nginx (open
    connections finish on the old workers); returns once new requests see the change."""
    config.events_extra_nginx = BLOCK_EVENTS if blocked else ""
    stack.render_nginx(config)
    os.kill(int((config.run_dir / "nginx.pid").read_text()), signal.SIGHUP)
    # Without a session the notifier answers 401; nginx itself answers 503 while blocked.
    expected = 503 if blocked else 401
    stack.wait_until(
        lambda: httpx.get(f"{config.public_url}/v1/events").status_code == expected,
        "nginx to reload",
        timeout=10,
    )
