"""notifier: fans task events out to their users over Server-Sent Events."""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State

from mediaflow_libs import amqp
from mediaflow_libs.app_builder import database, service_app
from mediaflow_libs.logging import configure_logging
from mediaflow_libs.serving import serve
from mediaflow_notifier import sse
from mediaflow_notifier.lifespans import lifespans
from mediaflow_notifier.resources import Resources
from mediaflow_notifier.settings import NotifierSettings


async def broker(resources: Resources) -> None:
    if resources.amqp.is_closed or not resources.fanout.ready:
        raise RuntimeError("the events queue is not consuming")


def create_app(settings: NotifierSettings | None = None) -> Litestar:
    settings = settings or NotifierSettings()
    resources = Resources(settings=settings, topology=amqp.Topology(settings.amqp_namespace))
    return service_app(
        settings,
        [sse.events],
        lifespan=lifespans(resources),
        readiness=[database, broker],
        state=State({"resources": resources}),
        answer_head=False,  # /v1/events is an endless stream
    )


def main() -> None:
    settings = NotifierSettings()
    configure_logging("notifier", settings.log_level, settings.log_format)
    serve("mediaflow_notifier.app:create_app", settings)
