"""A real Prometheus scrapes a real worker during a MovieLens replay on the real broker; then every PromQL
expression of the Grafana dashboard must return data, and the alert rules must load and evaluate cleanly."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from encoders.artifact import load_artifact
from stream.config import Settings
from stream.core.schemas import Event
from stream.kafka.consume import wait_until_serving
from stream.local.broker import free_port
from stream.local.processes import start_worker, stop_worker
from stream.tools.datasets import load_events
from stream.tools.replay import replay
from tests.artifacts import small_artifact
from tests.integration.test_deploy import ALERTS

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_BIN = Path("/usr/bin/prometheus")  # the Debian package `prometheus`
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "streamrec.json"
REPLAY_EVENTS = 1500
REPLAY_RATE = 150.0  # events/s: ten seconds of traffic
# 8000 events into the held-out last 10% of MovieLens: clicks, purchases and tag searches of ~25 users who
# come back, so the live hit-rate has opportunities and text_encode has observations.
SLICE_START = 8000


@pytest.fixture(scope="module")
def movielens_model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A small GRU trained for one epoch on MovieLens, so the replayed items are ones the model knows."""
    return small_artifact("movielens", data_dir, tmp_path_factory.mktemp("movielens-model"))


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture()
def prometheus(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """Prometheus from the Debian package on a free loopback port, scraping the test's worker every second
    with the repo's alert rules loaded; yields its base URL."""
    assert PROMETHEUS_BIN.is_file(), f"{PROMETHEUS_BIN} not found (apt-get install prometheus)"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "streamrec", "scrape_interval": "1s",
                            "static_configs": [{"targets": [f"127.0.0.1:{settings.metrics_port}"]}]}],
    }))
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(PROMETHEUS_BIN), f"--config.file={config}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            assert proc.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, f"prometheus not ready in 30 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def send_odd_records(settings: Settings, rounds: int, every_s: float) -> None:
    """Every few seconds: malformed input (dead letters) and a click on an item no model knows, sent twice (the
    second is a redelivery). Spread over the replay, so each counter moves inside the dashboard's rate windows."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for n in range(rounds):
            await asyncio.sleep(every_s)
            user = f"odd-{n}"
            click = Event("click", user, time.time(), f"odd-click-{n}", item_id="no-such-item").to_json()
            await producer.send(settings.topic_clicks, b"{not json", key=user.encode())
            await producer.send(settings.topic_purchases, orjson.dumps(
                {"schema_version": 1, "user_id": user, "item_id": "1", "ts": "yesterday"}), key=user.encode())
            await producer.send(settings.topic_clicks, click, key=user.encode())
            await producer.send(settings.topic_clicks, click, key=user.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def ask_the_api(settings: Settings, users: list[str], item: str, rounds: int, every_s: float) -> int:
    """During the replay: users' lists, an item's similar items and a bad request through the HTTP API, so the
    API's panels have requests of several routes and statuses to show. Returns the requests answered 200."""
    ok = 0
    failed: list[tuple[str, int]] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=5) as client:
        for n in range(rounds):
            await asyncio.sleep(every_s)
            for path in (f"/v1/users/{users[n % len(users)]}/recommendations", f"/v1/items/{item}/similar",
                         f"/v1/users/{users[0]}/recommendations?k=0"):
                status = (await client.get(path)).status_code
                ok += status == 200
                if status != 200 and "k=0" not in path:
                    failed.append((path, status))
    print(f"API requests not answered 200: {failed[:4]}")
    return ok


def query(url: str, expr: str) -> dict[str, Any]:
    """One instant query through Prometheus' HTTP API."""
    return http_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")  # type: ignore[no-any-return]


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    # Grafana fills in the variant selector; "All" is the regex .*
    return [(p["title"], t["expr"].replace("$variant", ".*")) for p in panels for t in p.get("targets", [])
            if t.get("expr")]


def finite_values(answer: dict[str, Any]) -> list[float]:
    return [v for v in (float(s["value"][1]) for s in answer["data"]["result"]) if math.isfinite(v)]


def test_every_dashboard_query_returns_data_from_a_live_worker(settings: Settings, movielens_model: Path,
                                                                prometheus: str) -> None:
    started = time.time()
    settings = settings.replace(model_path=movielens_model, learning="on")  # its panels too
    events = load_events("movielens", settings.data_dir)
    held_out = events[int(len(events) * 0.9):]
    chosen = held_out[SLICE_START:SLICE_START + REPLAY_EVENTS]
    assert {e.type for e in chosen} == {"click", "search", "purchase"}, "the replayed slice lost an event type"
    worker = start_worker(settings, movielens_model, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: worker.poll() is None))
        print(f"\nworker serving after {time.time() - started:.1f} s")

        async def traffic() -> None:
            users = sorted({e.user_id for e in chosen})
            item = load_artifact(movielens_model).item_ids[0]  # an item the model has a vector for
            stats, _, answered = await asyncio.gather(replay(settings, chosen, REPLAY_RATE, REPLAY_EVENTS),
                                                      send_odd_records(settings, rounds=4, every_s=2.0),
                                                      ask_the_api(settings, users, item, rounds=16, every_s=0.5))
            print(f"replayed {stats.sent} events {stats.by_type} in {stats.seconds:.1f} s, plus 16 odd records; "
                  f"{answered} of 32 good API requests answered 200")
            assert answered == 32

        asyncio.run(traffic())
        targets = dashboard_targets()
        # The lag and users gauges are refreshed every 5 s and scraped every 1 s: after 8 s they show the state
        # after the replay. Then wait until every query has data (or 30 s more).
        time.sleep(8)
        deadline = time.time() + 30
        while True:
            answers = [(title, expr, query(prometheus, expr)) for title, expr in targets]
            empty = [(title, expr) for title, expr, a in answers
                     if a["status"] != "success" or not finite_values(a)]
            if not empty or time.time() > deadline:
                break
            time.sleep(1)

        for title, expr, answer in answers:
            values = ", ".join(f"{s['metric'] or '{}'} = {s['value'][1]}" for s in answer["data"]["result"])
            print(f"[{title}] {expr}\n    -> {values or 'NO DATA'}")
        assert not empty, "panels whose query returned no data: " + "; ".join(f"{t!r}: {e}" for t, e in empty)
        # The stream taught the worker: co-views were counted, lists published and applied.
        learned = {expr: max(float(s["value"][1]) for s in answer["data"]["result"]) for _, expr, answer in answers
                   if any(name in expr for name in ("co_views_total", "cooccurrence_updates_total",
                                                    "lists_published_total", "cooccurrence_items"))}
        assert len(learned) >= 4 and all(value > 0 for value in learned.values()), learned

        rules = http_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        loaded = {r["name"]: r for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert set(loaded) == ALERTS
        for name, rule in loaded.items():
            assert rule["health"] == "ok", f"{name} fails to evaluate: {rule.get('lastError')}"
        firing = {name: rule["state"] for name, rule in loaded.items() if rule["state"] != "inactive"}
        print(f"rules loaded: {sorted(loaded)}; not inactive: {firing or 'none'}")
        print(f"test body took {time.time() - started:.1f} s")
    finally:
        stop_worker(worker)
        print((settings.home / "worker.log").read_text()[-1500:])
