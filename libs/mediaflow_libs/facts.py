"""What ``mediaflow diagnose`` compares across services, in a module of its own so that a
service without Litestar (the worker) can serve it too."""

from __future__ import annotations

import hashlib
from typing import Any

from mediaflow_libs.settings import ServiceSettings


def configuration_facts(settings: ServiceSettings) -> dict[str, Any]:
    """The facts; the service secret appears only as a short fingerprint."""
    secret = settings.service_secret.get_secret_value().encode()
    return {
        "public_url": settings.public_url,
        "service_secret_fingerprint": hashlib.sha256(
            b"mediaflow-fingerprint:" + secret
        ).hexdigest()[:16],
        "amqp_namespace": settings.amqp_namespace,
    }
