"""gateway: the public tasks API, credits, and the outbox relay that publishes jobs."""

from __future__ import annotations

from litestar import Litestar

from mediaflow_gateway import openapi, routes, web_page
from mediaflow_gateway.resources import open_resources
from mediaflow_gateway.settings import GatewaySettings
from mediaflow_libs.app_builder import broker, database, service_app
from mediaflow_libs.logging import configure_logging
from mediaflow_libs.serving import serve
from mediaflow_libs.telemetry import configure_tracing


def create_app(settings: GatewaySettings | None = None) -> Litestar:
    settings = settings or GatewaySettings()
    return service_app(
        settings,
        [*routes.route_handlers, openapi.openapi_schema, *web_page.route_handlers],
        open_resources=lambda: open_resources(settings),
        readiness=[database, broker],
        dependencies=routes.dependencies,
        openapi_config=openapi.openapi_config(),
    )


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    configure_tracing("gateway")
    serve("mediaflow_gateway.app:create_app", settings)
