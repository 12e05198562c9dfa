"""auth: users, passwords and sessions; the internal verify endpoint gateway and notifier call."""

from __future__ import annotations

from litestar import Litestar

from mediaflow_auth import routes
from mediaflow_auth.resources import open_resources
from mediaflow_auth.settings import AuthSettings
from mediaflow_libs.app_builder import database, service_app
from mediaflow_libs.logging import configure_logging
from mediaflow_libs.routing import internal_routes_on_their_own_port
from mediaflow_libs.serving import serve


def create_app(settings: AuthSettings | None = None) -> Litestar:
    settings = settings or AuthSettings()
    return service_app(
        settings,
        routes.route_handlers,
        open_resources=lambda: open_resources(settings),
        readiness=[database],
    )


def create_served_app() -> Litestar:
    """auth as its process serves it: the session check on INTERNAL_PORT alone (a
    NetworkPolicy opens that port to gateway and notifier only), the rest on PORT.
    In-process tests use :func:`create_app`, which answers both on one port."""
    settings = AuthSettings()
    return internal_routes_on_their_own_port(create_app(settings), settings.internal_port)


def main() -> None:
    settings = AuthSettings()
    configure_logging("auth", settings.log_level, settings.log_format)
    serve("mediaflow_auth.app:create_served_app", settings, internal_port=settings.internal_port)
