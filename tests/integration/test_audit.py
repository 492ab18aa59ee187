"""`streamrec audit` on a real run: nothing lost, nothing doubled, states equal a single-process replay;
and it does report an event nobody answered."""

from __future__ import annotations

import asyncio
import time

from stream.config import Settings
from stream.core.schemas import Event
from stream.kafka.consume import wait_until_serving
from stream.local.processes import start_worker, stop_worker
from stream.tools.audit import audit, read_topic
from stream.tools.datasets import load_events
from stream.tools.replay import replay
from tests.streaming import send, wait_for_metric


def test_audit_of_a_clean_run_then_of_an_unanswered_event(settings: Settings) -> None:
    assert settings.model_path is not None
    events = load_events("diginetica", settings.data_dir)[:400]
    proc = start_worker(settings, settings.model_path, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: proc.poll() is None))
        asyncio.run(replay(settings, events, rate=200.0))
        asyncio.run(send(settings, [(settings.topic_clicks, b"odd", b"{broken"),
                                    (settings.topic_purchases, b"odd", b'{"schema_version": 1}')]))
        # Every input record answered (a list or a dead letter; the readiness probes are records too) before the
        # worker stops: however long that takes here.
        records = sum(len(asyncio.run(read_topic(settings, topic))) for topic in settings.input_topics.values())
        assert records >= len(events) + 2
        wait_for_metric(settings.metrics_port, ["streamrec_worker_recommendations_total",
                                                "streamrec_worker_dead_letters_total"], records)
    finally:
        stop_worker(proc)
    report = asyncio.run(audit(settings)).summary()
    print(report)
    assert report["events"] >= 400
    assert (report["lost"], report["duplicated"], report["state_mismatches"]) == (0, 0, 0), report
    assert report["users_checked"] >= len({e.user_id for e in events})

    # With no worker running, a new event gets no list: the audit must say so.
    orphan = Event("click", "nobody-answers", time.time(), "orphan-1", item_id="x")
    asyncio.run(send(settings, [(settings.topic_clicks, b"nobody-answers", orphan.to_json())]))
    report = asyncio.run(audit(settings)).summary()
    assert report["lost"] == 1 and report["examples"]["lost"] == ["orphan-1"], report
