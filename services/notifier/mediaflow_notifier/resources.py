from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from litestar.datastructures import State

from mediaflow_libs.amqp import Topology
from mediaflow_libs.session_client import SessionClient
from mediaflow_notifier.fanout import Fanout
from mediaflow_notifier.heartbeat import Heartbeat
from mediaflow_notifier.settings import NotifierSettings


@dataclass
class Resources:
    """What the app runs on; each resource is set by its own lifespan as it opens."""

    settings: NotifierSettings
    topology: Topology
    pool: asyncpg.Pool = field(init=False)
    amqp: AbstractRobustConnection = field(init=False)
    fanout: Fanout = field(init=False)
    heartbeat: Heartbeat = field(init=False)
    sessions: SessionClient = field(init=False)
    # user id -> streams open (or opening) on this process, for the per-user limit
    streams_per_user: Counter[str] = field(default_factory=Counter)


def resources_of(state: State) -> Resources:
    resources: Resources = state.resources
    return resources
