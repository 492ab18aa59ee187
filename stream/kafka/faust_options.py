"""The ``faust.App`` options every streamrec Faust app shares: the worker and the benchmark's bare agent.

They live apart from ``create_app`` so ``streamrec bench pipeline`` can measure a bare Faust agent with exactly
the worker's consumer and producer settings.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from stream.config import Settings
from stream.kafka.clients import faust_credentials

if TYPE_CHECKING:
    import faust


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


def web_options(settings: Settings) -> dict[str, Any]:
    """Faust's web server for the HTTP API (stream/kafka/http_api.py): bound to ``http_host:http_port``, reached
    by other workers at ``http_url_host``, and without Faust's own pages (``/table`` would serve raw user
    states to anyone)."""
    if not settings.http_port:
        return {"web_enabled": False}
    return {"web_enabled": True, "web_bind": settings.http_host, "web_port": settings.http_port,
            "web_host": settings.http_url_host, "web_router_enabled": False, "web_tables_enabled": False,
            "web_graph_enabled": False, "web_stats_enabled": False, "web_metrics_enabled": False}


def new_app(settings: Settings, web: bool = False) -> faust.App:
    """The ``faust.App`` of a streamrec process: the options above (with ``web``, the HTTP API's server), its
    data folder under ``home``, and the transport whose consumer waits at most ``fetch_max_wait_ms`` per fetch
    (stream/kafka/faust_fetch.py)."""
    import faust

    from stream.kafka.faust_fetch import use_fetch_wait

    datadir = settings.home / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    options = app_options(settings) | (web_options(settings) if web else {})
    app = faust.App(settings.app_id, datadir=str(datadir), **options)
    use_fetch_wait(app, settings.fetch_max_wait_ms)
    return app


def freeze_heap() -> int:
    """Collect once, then move every object alive now (torch, transformers, Faust, the model and its index:
    about 250k objects) to the collector's permanent generation; returns how many.

    They live as long as the process, yet each full collection walked them all with the event loop stopped,
    a pause of a hundred milliseconds and more (figures: docs/benchmarks.md). Frozen objects are still freed
    by reference counting (a model swapped out goes that way); only a reference cycle among them would outlive
    its use. Call it once the app is built, before it consumes."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
