"""The HTTP pull API on Faust's web server: a user's list now, an item's similar items, health and readiness.

Handlers stay thin: parse and check the parameters (stream/core/requests.py), route, call the data path
(:meth:`Recommender.current_list`, :meth:`Recommender.similar`), serialise. A user's request is answered by the
worker that owns the user's partition of the state table: Faust's table routing metadata
(``app.router.table_metadata``: each worker's URL and its partitions of the table) names the owner, and this
module forwards the request there itself rather than through ``app.table_route``, whose forwarding drops the
answer's headers (``Retry-After``), has no timeout, and turns an owner gone mid-rebalance into a 500. An owner
answers only for partitions it holds, recovered, outside a rebalance; otherwise 503 with ``Retry-After``. A
forwarded request carries ``ROUTED_HEADER`` and is never forwarded twice.

One aiohttp middleware wraps every request: the bearer token, the latency histogram and in-flight gauge, and
the rule that nothing a client sends gives a 500 (an unexpected error is logged and answered 503).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import aiohttp
import faust
import orjson
from aiohttp import web
from aiokafka.partitioner import DefaultPartitioner
from yarl import URL

from stream.config import Settings
from stream.core.metrics import Metrics
from stream.core.pipeline import Recommender
from stream.core.requests import parse_list_request, parse_similar_request
from stream.errors import InvalidRequest
from stream.kafka.openapi import openapi
from stream.kafka.state_table import StateTable

log = logging.getLogger(__name__)
ROUTED_HEADER = "X-Streamrec-Routed"  # set on a request forwarded to its owner: never forwarded again
RETRY_AFTER_S = 1  # what a 503 tells the client to wait
ROUTE_TIMEOUT_S = 2.0  # longest wait for the owner of a forwarded request
MAX_QUERY_FIELDS = 20
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
USERS_ROUTE = "/v1/users/{user_id}/recommendations"
SIMILAR_ROUTE = "/v1/items/{item_id}/similar"
OPEN_PATHS = ("/healthz", "/readyz")  # probes carry no token


@dataclass
class Readiness:
    """What ``/readyz`` and the request handlers check: set by the app factory's hooks."""

    loaded: bool = False  # the model, its index and the catalog are read (the agents' gate is open)
    recovered: bool = False  # the last rebalance completed: partitions assigned, the table recovered

    def problem(self, app: faust.App) -> str | None:
        """Why this worker cannot answer for its partitions now (None: it can)."""
        if not self.loaded:
            return "loading the model, the index and the catalog"
        if app.rebalancing or not self.recovered:
            return "rebalancing or recovering the state table"
        return None


def install_http_api(app: faust.App, settings: Settings, recommender: Recommender, states: StateTable,
                     metrics: Metrics, readiness: Readiness) -> None:
    """Add the API's pages and middleware to the Faust app's web server (before it starts)."""
    server = cast(web.Application, app.web.web_app)  # type: ignore[attr-defined]  # the aiohttp driver's
    server.middlewares.append(_middleware(settings, metrics))
    inputs = settings.topic_clicks  # co-partitioned with the state table: its partitions are the table's
    document = orjson.dumps(openapi(settings))
    partitions = list(range(settings.partitions))
    partitioner = DefaultPartitioner()  # murmur2 of the key, as the producers of the input topics partition

    @app.page("/healthz")
    class Health(faust.web.View):
        async def get(self, request: web.Request) -> web.Response:
            return _json({"status": "up"})

    @app.page("/readyz")
    class Ready(faust.web.View):
        async def get(self, request: web.Request) -> web.Response:
            problem = readiness.problem(app)
            if problem is not None:
                return _unavailable(problem)
            return _json({"status": "ready", "partitions": sorted(_owned(app, inputs))})

    @app.page("/v1/openapi.json")
    class OpenApi(faust.web.View):
        async def get(self, request: web.Request) -> web.Response:
            return web.Response(body=document, content_type="application/json")

    @app.page(USERS_ROUTE)
    class UserList(faust.web.View):
        async def get(self, request: web.Request, user_id: str) -> web.Response:
            if not readiness.loaded:
                return _unavailable("loading the model, the index and the catalog")
            parsed = parse_list_request(_path_part(request, 3, "user_id"), _query(request),
                                        recommender.catalog.categories(), settings.top_k)
            partition = partitioner(parsed.user_id.encode(), partitions, partitions)
            if partition not in _owned(app, inputs):
                if request.headers.get(ROUTED_HEADER):
                    return _unavailable("the user's partition moved; ask again")
                return await _forward(app, _owner(app, states, partition), request)
            problem = readiness.problem(app)
            if problem is not None:
                return _unavailable(problem)
            return web.Response(body=recommender.current_list(parsed, states).to_json(),
                                content_type="application/json")

    @app.page(SIMILAR_ROUTE)
    class Similar(faust.web.View):
        async def get(self, request: web.Request, item_id: str) -> web.Response:
            if not readiness.loaded:
                return _unavailable("loading the model, the index and the catalog")
            parsed = parse_similar_request(_path_part(request, 3, "item_id"), _query(request), settings.top_k)
            found = recommender.similar(parsed)
            if found is None:
                return _json({"error": "not_found", "parameter": "item_id", "detail": "unknown item"}, 404)
            return web.Response(body=found.to_json(), content_type="application/json")



def _owned(app: faust.App, topic: str) -> set[int]:
    """Partitions of ``topic`` this worker's consumer holds now."""
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}


def _owner(app: faust.App, states: StateTable, partition: int) -> URL | None:
    """The URL of the worker that holds this partition of the state table, by the last assignment."""
    for url, topics in app.router.table_metadata(states.table.name).items():
        if partition in topics.get(states.changelog, ()):
            return URL(url)
    return None


async def _forward(app: faust.App, owner: URL | None, request: web.Request) -> web.Response:
    """Send a request to the worker that owns the user's partition and pass its answer on (status, body,
    ``Retry-After``); an owner unknown, gone or slow is a 503."""
    if owner is None:
        return _unavailable("the user's partition has no owner yet")
    if (owner.host, owner.port) == (app.conf.canonical_url.host, app.conf.canonical_url.port):
        return _unavailable("the user's partition is being assigned to this worker")
    url = request.url.with_scheme(owner.scheme or "http").with_host(owner.host or "").with_port(owner.port)
    headers = {ROUTED_HEADER: "1"}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    client = app.http_client
    try:
        async with client.get(url, headers=headers, allow_redirects=False,
                              timeout=aiohttp.ClientTimeout(total=ROUTE_TIMEOUT_S)) as answer:
            body = await answer.read()
            passed = {name: answer.headers[name] for name in ("Retry-After",) if name in answer.headers}
            return web.Response(body=body, status=answer.status, headers=passed,
                                content_type=answer.content_type)
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.info("routing a request to %s failed: %s", owner, type(exc).__name__)
        return _unavailable("the owner of the user's partition did not answer")


def _middleware(settings: Settings, metrics: Metrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    token = f"Bearer {settings.http_token}".encode() if settings.http_token else None

    @web.middleware
    async def api(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                  ) -> web.StreamResponse:
        started = time.perf_counter()
        metrics.http_in_flight.inc()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await _answer(request, handler, token)
        finally:
            metrics.http_in_flight.dec()
        metrics.http_latency.labels(route=route, status=str(response.status)).observe(time.perf_counter() - started)
        return response

    return api


async def _answer(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                  token: bytes | None) -> web.StreamResponse:
    if token is not None and request.path not in OPEN_PATHS:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, token):
            return _json({"error": "unauthorized", "detail": "a bearer token is required"}, 401,
                         {"WWW-Authenticate": 'Bearer realm="streamrec"'})
    try:
        return await handler(request)
    except InvalidRequest as exc:
        return _json({"error": "invalid_parameter", "parameter": exc.parameter, "detail": exc.why}, 400)
    except web.HTTPException as exc:  # aiohttp's own: 404 for an unknown path, 405 for another method
        return _json({"error": exc.reason.lower().replace(" ", "_"), "detail": exc.reason}, exc.status)
    except Exception:  # a bug, not the client's fault: logged, and the client may try again
        log.exception("the HTTP API failed on %s %s", request.method, request.match_info.route.resource)
        return _unavailable("internal error")


def _path_part(request: web.Request, index: int, name: str) -> str:
    """A path segment decoded strictly from the raw path (aiohttp's decoding lets bad UTF-8 through)."""
    parts = request.raw_path.partition("?")[0].split("/")
    return _decode(parts[index] if index < len(parts) else "", name)


def _query(request: web.Request) -> dict[str, str]:
    """The query string's parameters, decoded strictly; a repeated one is an error."""
    out: dict[str, str] = {}
    raw = request.query_string
    if not raw:
        return out
    pairs = raw.split("&")
    if len(pairs) > MAX_QUERY_FIELDS:
        raise InvalidRequest("query", f"at most {MAX_QUERY_FIELDS} parameters")
    for pair in pairs:
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = _decode(raw_name.replace("+", " "), "query")
        if name in out:
            raise InvalidRequest(name[:64], "given more than once")
        out[name] = _decode(raw_value.replace("+", " "), name[:64])
    return out


def _decode(text: str, name: str) -> str:
    if _BAD_PERCENT.search(text):
        raise InvalidRequest(name, "bad percent-encoding")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(name, "not valid UTF-8") from None


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def _unavailable(why: str) -> web.Response:
    return _json({"error": "unavailable", "detail": why}, 503, {"Retry-After": str(RETRY_AFTER_S)})

