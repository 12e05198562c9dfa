"""Prometheus metrics of the notifier; labels never carry user or task ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTED_CLIENTS = Gauge("notifier_connected_clients", "Open event streams")
EVENTS_DELIVERED = Counter(
    "notifier_events_delivered_total",
    "Task events written to streams, by how they were found",
    ["kind"],  # snapshot | replay | live
)
DISCONNECTS = Counter(
    "notifier_disconnects_total",
    "Event streams that ended, by why",
    ["reason"],  # client | slow_client | shutdown | broker_lost | error
)
DELIVERY_LAG = Histogram(
    "notifier_delivery_lag_seconds",
    "Time from a task change (its updated_at) to its live event being written to the socket",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COALESCED_UPDATES = Counter(
    "notifier_coalesced_updates_total",
    "Progress updates replaced, before being sent, by a newer one of the same task and attempt",
)
DROPPED_UPDATES = Counter(
    "notifier_dropped_updates_total",
    "Events never sent because their stream fell too far behind and was ended",
)
UNDECODABLE_MESSAGES = Counter(
    "notifier_undecodable_messages_total", "Messages on the events queue that were not a TaskEvent"
)
