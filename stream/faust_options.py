"""The ``faust.App`` options every streamrec Faust app shares: the worker and the benchmark's bare agent.

They live apart from ``create_app`` so ``streamrec bench pipeline`` can measure a bare Faust agent with exactly
the worker's consumer and producer settings.
"""

from __future__ import annotations

from typing import Any

from stream.config import Settings
from stream.kafka_clients import faust_credentials


def app_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``faust.App(app_id, ...)`` (the data folder is each app's own)."""
    return {
        "broker": settings.broker_url,
        "store": settings.store,
        "web_enabled": False,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_rebalance_timeout": settings.rebalance_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "producer_linger": 0.0,
        "stream_wait_empty": False,
        "broker_credentials": faust_credentials(settings),
    }
