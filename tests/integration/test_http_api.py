"""The HTTP API of real worker processes on the real broker: routing to the owner, rebalances, readiness and
hostile requests, with real HTTP clients (httpx, and http.client for raw paths)."""

from __future__ import annotations

import asyncio
import http.client
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from encoders.artifact import load_artifact
from stream.config import Settings
from stream.core.schemas import Recommendation
from stream.kafka.consume import RecommendationReader
from stream.local.broker import free_port
from stream.local.processes import start_worker, stop_worker
from tests.streaming import click, collect, send, wait_for_workers

TOKEN = "test-token-0123456789abcdef"
READY_AFTER_METRICS_S = 120.0
Worker = tuple[subprocess.Popen[bytes], Settings]


def worker_settings(settings: Settings, name: str) -> Settings:
    return settings.replace(home=settings.home / name, metrics_port=free_port(), http_port=free_port())


def start(settings: Settings, name: str) -> Worker:
    own = worker_settings(settings, name)
    assert settings.model_path is not None
    return start_worker(own, settings.model_path, own.home / "worker.log"), own


def wait_ready(workers: list[Worker], settings: Settings) -> None:
    wait_for_workers([(proc, own.metrics_port, own.home / "worker.log") for proc, own in workers],
                     settings.partitions * len(settings.input_topics))
    for _, own in workers:  # the metrics say ready; the API must agree once the table's recovery is done
        # The metrics count partitions as soon as they are assigned; /readyz waits for Faust's recovery too,
        # which a loaded 2-core machine has been seen to take well over 30 s over.
        deadline = time.monotonic() + READY_AFTER_METRICS_S
        while (ready := httpx.get(f"{base(own)}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, \
                f"readyz {ready.status_code} {ready.text} {READY_AFTER_METRICS_S:.0f} s after the worker's " \
                f"metrics said ready; its recovery:\n{recovery_lines(own.home / 'worker.log')}"
            time.sleep(0.1)


def recovery_lines(log: Path) -> str:
    """The worker log's lines about rebalances and recovery (what a stalled readiness needs explaining by)."""
    words = ("Recover", "recover", "rebalanc", "Rebalanc", "WARN", "ERROR", "assign", "revok")
    return "\n".join(line for line in log.read_text().splitlines() if any(w in line for w in words))[-6000:]


def stop(workers: list[Worker]) -> None:
    for proc, own in workers:
        stop_worker(proc)
        print((own.home / "worker.log").read_text()[-2000:])


def base(own: Settings) -> str:
    return f"http://127.0.0.1:{own.http_port}"


def partition_of(user: str, partitions: int) -> int:
    every = list(range(partitions))
    return int(DefaultPartitioner()(user.encode(), every, every))


def lists_for_users(settings: Settings, users: list[str]) -> dict[str, Recommendation]:
    """Two clicks per user through the topics; each user's last list as the topic carries it."""
    items = load_artifact(settings.model_path).item_ids  # type: ignore[arg-type]

    async def run() -> dict[str, Recommendation]:
        reader = RecommendationReader(settings)
        await reader.start()
        records = [(settings.topic_clicks, user.encode(), click(user, items[(7 * n + j) % len(items)], f"{user}-{j}"))
                   for j in range(2) for n, user in enumerate(users)]
        await send(settings, records)
        got = await collect(reader, {f"{user}-1" for user in users}, timeout_s=30)
        await reader.stop()
        return {rec.user_id: rec for rec in got.values()}

    lists = asyncio.run(run())
    assert set(lists) == set(users), f"no list for {set(users) - set(lists)}"
    return lists


def same_list(answer: dict[str, Any], rec: Recommendation) -> bool:
    """The answer is this user's list: the topic's record for the user's last event, computed again."""
    return (answer["user_id"] == rec.user_id and answer["event"] is None and answer["source"] == "request"
            and [it["item_id"] for it in answer["items"]] == [it.item_id for it in rec.items]
            and answer["state_seq"] == rec.state_seq and answer["model_version"] == rec.model_version)


@pytest.fixture()
def users() -> list[str]:
    return [f"api-user-{n}" for n in range(24)]


def test_a_request_to_either_worker_gets_the_owners_list(settings: Settings, users: list[str]) -> None:
    workers = [start(settings, "w1"), start(settings, "w2")]
    try:
        wait_ready(workers, settings)
        lists = lists_for_users(settings, users)
        owned = {own.http_port: set(httpx.get(f"{base(own)}/readyz").json()["partitions"]) for _, own in workers}
        assert all(owned.values()) and set.union(*owned.values()) == set(range(settings.partitions))
        routed = 0
        with httpx.Client(timeout=5) as client:
            for user in users:
                answers = {}
                for _, own in workers:
                    response = client.get(f"{base(own)}/v1/users/{user}/recommendations", params={"k": 10})
                    assert response.status_code == 200, response.text
                    answers[own.http_port] = response.json()
                    routed += partition_of(user, settings.partitions) not in owned[own.http_port]
                first, second = answers.values()
                assert first == {**second, "generated_at": first["generated_at"]}  # the owner computed both
                assert same_list(first, lists[user]), (first, lists[user])
        assert routed == len(users)  # every user was asked of one worker that does not own it
        other = workers[0][1]
        similar = httpx.get(f"{base(other)}/v1/items/{lists[users[0]].items[0].item_id}/similar", params={"k": 5})
        assert similar.status_code == 200 and len(similar.json()["items"]) == 5
        assert httpx.get(f"{base(other)}/v1/items/no-such-item/similar").status_code == 404
    finally:
        stop(workers)


def test_requests_during_rebalances_succeed_or_get_503(settings: Settings, users: list[str]) -> None:
    """One worker serves; a second starts, then stops: two rebalances. Requests to the first worker all the
    while get the user's own list or a 503 with Retry-After, nothing else."""
    first = start(settings, "w1")
    workers = [first]
    outcomes: dict[int, int] = {}
    wrong: list[str] = []
    done = threading.Event()
    try:
        wait_ready(workers, settings)
        lists = lists_for_users(settings, users)

        def ask() -> None:
            rng = random.Random(3)
            with httpx.Client(timeout=5) as client:
                while not done.is_set():
                    user = rng.choice(users)
                    response = client.get(f"{base(first[1])}/v1/users/{user}/recommendations")
                    outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        if not same_list(response.json(), lists[user]):
                            wrong.append(response.text)
                    elif response.status_code != 503 or "Retry-After" not in response.headers:
                        wrong.append(f"{response.status_code}: {response.text}")

        asker = threading.Thread(target=ask)
        asker.start()
        second = start(settings, "w2")
        workers.append(second)
        wait_ready(workers, settings)
        during_join = dict(outcomes)
        stop_worker(second[0])
        workers.remove(second)
        deadline = time.monotonic() + 60  # until the first worker owns every partition again
        every = set(range(settings.partitions))
        while set(httpx.get(f"{base(first[1])}/readyz").json().get("partitions", [])) != every:
            assert time.monotonic() < deadline, "the first worker never took the partitions back"
            time.sleep(0.2)
        time.sleep(1.0)  # answers after the second rebalance too
        done.set()
        asker.join()
    finally:
        done.set()
        stop(workers)
    print(f"\noutcomes while the second worker joined: {during_join}; in all: {outcomes}")
    assert not wrong, wrong[:5]
    assert outcomes.get(200, 0) > 100 and set(outcomes) <= {200, 503}
    assert during_join.get(503, 0) > 0, "the join's rebalance never answered 503: the window went unnoticed"


def test_readyz_is_false_until_the_state_is_recovered(settings: Settings, users: list[str]) -> None:
    """A restarted worker restores its state table from the changelog: /readyz is 503 until that is done, and
    the first answer after it is the user's own list (a worker ready too soon would answer from no state)."""
    first = start(settings, "w1")
    try:
        wait_ready([first], settings)
        lists = lists_for_users(settings, users)
    finally:
        stop([first])
    proc, own = start(settings, "w2")
    log = own.home / "worker.log"
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(timeout=5) as client:
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"never ready: {seen[-5:]}"
                try:
                    ready = client.get(f"{base(own)}/readyz")
                except httpx.TransportError:
                    continue  # the web server starts once the model is loaded
                if ready.status_code == 503:
                    assert ready.headers["Retry-After"] == "1"
                    user = client.get(f"{base(own)}/v1/users/{users[0]}/recommendations")
                    assert user.status_code == 503 and "Retry-After" in user.headers, user.text
                seen.append(ready.status_code)
                if ready.status_code == 200:
                    break
                time.sleep(0.05)
            assert "Restore complete" in log.read_text(), "ready before the table's recovery ended"
            for user in users:
                answer = client.get(f"{base(own)}/v1/users/{user}/recommendations")
                assert answer.status_code == 200 and same_list(answer.json(), lists[user]), answer.text
    finally:
        stop([(proc, own)])
    assert seen[0] == 503 and seen[-1] == 200 and set(seen) == {200, 503}, seen


def fuzzed_request(rng: random.Random, user: str, item: str) -> tuple[str, dict[str, str]]:
    """A path and query string a hostile or broken client might send (printable ASCII: what http.client sends)."""
    def junk(n: int) -> str:
        pieces = [rng.choice(["%", "%f", "%zz", "%ff", "%c3%28", "%e2%82", "%00", "%2F", "%25", "..", "/", "?",
                              "&", "=", "+", "%ed%a0%80", "%f0%9f%9a%80", "\\", "'", '"', "<", "{", "}",
                              str(rng.randint(-10**6, 10**6)), "k", "category", "exclude"]) for _ in range(n)]
        pieces.append("".join(rng.choice("abcxyz019-_.~!*()") for _ in range(rng.randint(0, 8))))
        rng.shuffle(pieces)
        return "".join(pieces)

    route = rng.random()
    if route < 0.45:
        who = rng.choice([user, junk(rng.randint(1, 6)), "u" * rng.choice([1, 256, 257, 3000]), ""])
        path = f"/v1/users/{who}/recommendations"
    elif route < 0.8:
        path = f"/v1/items/{rng.choice([item, junk(rng.randint(1, 6)), 'i' * 257])}/similar"
    else:
        path = rng.choice(["/", "/v1", "/v1/users", "/v1/users//recommendations", "/table/user-state",
                           "/router", "/readyz", "/healthz", "/v1/openapi.json", "/" + junk(4)])
    ks = ["0", "1", "10", "100", "101", "-1", "1e2", "0x10", "", "+5", "%35", "9" * 40]
    params = [rng.choice([f"k={rng.choice(ks)}", f"category={junk(2)}", f"exclude={junk(3)},{item}", junk(2),
                          "k=5&k=6", "exclude=" + "x," * 2000]) for _ in range(rng.randint(0, 3))]
    headers = {"Authorization": f"Bearer {TOKEN}"} if rng.random() < 0.95 else \
        rng.choice([{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eA=="}])
    return path + ("?" + "&".join(params) if params else ""), headers


def test_hostile_requests_never_crash_a_worker_nor_get_a_500(settings: Settings, users: list[str]) -> None:
    proc, own = start(settings.replace(http_token=TOKEN), "w1")
    try:
        wait_ready([(proc, own)], settings)
        lists = lists_for_users(settings, users[:4])
        item = lists[users[0]].items[0].item_id
        rng = random.Random(20261203)
        statuses: dict[int, int] = {}
        unparsed = 0  # refused by aiohttp's HTTP parser (a request line over 8 KB) before the API sees them
        connection = http.client.HTTPConnection("127.0.0.1", own.http_port, timeout=10)
        for _ in range(10_000):
            path, headers = fuzzed_request(rng, users[0], item)
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            assert response.status < 500, (path, response.status, body[:300])
            if response.status == 400 and body.startswith(b"{"):
                assert b'"parameter"' in body, (path, body[:300])
            unparsed += not body.startswith(b"{")
            if response.will_close:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", own.http_port, timeout=10)
        connection.close()
        print(f"\nstatuses of 10,000 fuzzed requests: {dict(sorted(statuses.items()))}, {unparsed} refused unparsed")
        assert {200, 400, 401, 404} <= set(statuses), statuses
        assert proc.poll() is None
        good = httpx.get(f"{base(own)}/v1/users/{users[0]}/recommendations",
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and same_list(good.json(), lists[users[0]])
        assert httpx.get(f"{base(own)}/v1/users/{users[0]}/recommendations").status_code == 401
        assert httpx.get(f"{base(own)}/healthz").status_code == 200  # probes need no token
        counted = [line for line in httpx.get(f"http://127.0.0.1:{own.metrics_port}/metrics").text.splitlines()
                   if line.startswith("streamrec_http_request_duration_seconds_count{")]
        assert sum(float(line.split()[-1]) for line in counted) >= 10_000 - unparsed
        assert not [line for line in counted if 'status="5' in line], counted
        document = httpx.get(f"{base(own)}/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert set(document["paths"]) == {"/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar",
                                          "/healthz", "/readyz"}
    finally:
        stop([(proc, own)])
