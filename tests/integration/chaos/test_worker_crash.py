"""Chaos: two workers share the partitions, one is SIGKILLed mid-stream and restarted; the audit must find
no lost event and no wrong state. Run by `make chaos` (and CI), not by `make test`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

from stream.config import Settings
from stream.kafka.consume import wait_until_serving
from stream.local.broker import free_port
from stream.local.processes import start_worker, stop_worker
from stream.tools.audit import audit, cooccurrence_audit
from stream.tools.datasets import load_events
from stream.tools.replay import replay

RATE = 200.0
EVENTS = 4000  # 20 s of traffic
KILL_AT_S, RESTART_AT_S = 6.0, 9.0


def test_worker_killed_mid_stream_loses_nothing(settings: Settings) -> None:
    settings = settings.replace(learning="on")  # the fixture's reference tests turn it off
    assert settings.model_path is not None
    model = settings.model_path
    one = settings.replace(home=settings.home / "w1", metrics_port=free_port(), http_port=free_port())
    two = settings.replace(home=settings.home / "w2", metrics_port=free_port(), http_port=free_port())
    events = load_events("diginetica", settings.data_dir)[:EVENTS]
    first = start_worker(one, model, one.home / "worker.log")
    second = None
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: first.poll() is None))
        second = start_worker(two, model, two.home / "worker.log")
        time.sleep(8)  # let the group rebalance onto both workers
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: second.poll() is None))

        async def traffic() -> None:
            nonlocal second
            task = asyncio.create_task(replay(settings, events, RATE))
            await asyncio.sleep(KILL_AT_S)
            assert second is not None
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
            await asyncio.sleep(RESTART_AT_S - KILL_AT_S)
            second = start_worker(two, model, two.home / "worker-restarted.log")
            await task

        asyncio.run(traffic())
        time.sleep(20)  # session timeout, rebalance, recovery, then the backlog
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_worker(proc)
    report = asyncio.run(audit(settings)).summary()
    # The killed worker held half the co-occurrence table too: rebuilt from its changelog, it must count as a
    # single process would have counted the same co-views.
    report |= asyncio.run(cooccurrence_audit(settings))
    print("\nworker crash audit:", json.dumps(report))
    assert report["events"] >= EVENTS
    assert report["lost"] == 0, report
    assert report["state_mismatches"] == 0, report
    assert report["co_views"] > 1000 and report["items"] > 100 and report["behind"] == 0, report
    assert report["cooccurrence_mismatches"] == 0, report
