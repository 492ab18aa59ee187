"""One frozen, typed settings object for every streamrec process.

Values come from defaults, then ``STREAMREC_<NAME>`` environment variables, then explicit overrides
(CLI flags). ``Settings.validate()`` runs at start and raises :class:`ConfigError` naming the setting.
The commented example in ``deploy/streamrec.env.example`` lists every setting.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoders.models.live_neighbours import LiveConfig
from stream.core.schemas import EventType
from stream.core.variants import VariantSpec, parse_variants
from stream.errors import ConfigError

ENV_PREFIX = "STREAMREC_"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-_:]{1,253}$")
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/=]+$")  # RFC 6750 b64token: sent as is in the Authorization header


@dataclass(frozen=True)
class Settings:
    """Everything a worker, the CLI and the tests can configure."""

    # Kafka: a comma-separated host:port list; the local broker (`streamrec broker start`) listens here too.
    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "streamrec"  # Faust app id = consumer group and prefix of the changelog topic
    home: Path = Path(".streamrec")  # local state: broker data, jars, models, worker data
    data_dir: Path = Path("../shared/data")  # the shared real datasets (never copied into the repo)
    jars_dir: Path | None = None  # Kafka jars cache for the local broker; None = <home>/kafka-jars

    topic_clicks: str = "clicks"
    topic_searches: str = "searches"
    topic_purchases: str = "purchases"
    topic_items: str = "items"
    topic_recommendations: str = "recommendations"
    topic_dead_letters: str = "dead-letters"
    topic_erasures: str = "erasures"  # forget-user requests (GDPR), keyed by user like the input events
    topic_models: str = "models"  # model releases (`streamrec publish`), compacted, read whole by every worker
    # Learning from the stream (stream/core/cooccurrence.py): item events' transitions keyed by source item, and
    # each item's live neighbour list (compacted, read whole by every worker).
    topic_co_views: str = "co-views"
    topic_item_neighbours: str = "item-neighbours"
    # The input topics (events and erasures), recommendations and the state changelog share one partition count:
    # Faust co-partitions the user-state table with its source topics by user key.
    partitions: int = 4
    items_partitions: int = 1
    dead_letter_partitions: int = 1
    replication_factor: int = 1

    # Kafka security, passed through to the Faust app and every aiokafka client (producers, consumers, admin).
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str = "PLAIN"  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols only)
    sasl_username: str = ""
    sasl_password: str = ""  # prefer the environment variable to a flag; never logged
    ssl_cafile: Path | None = None  # CA bundle that signed the brokers' certificates (SSL, SASL_SSL)
    ssl_certfile: Path | None = None  # client certificate for mutual TLS
    ssl_keyfile: Path | None = None  # its private key

    # An artifact folder written by `streamrec train`, or a folder of artifacts (the newest one is served).
    model_path: Path | None = None
    # The model type served: "" = whatever the artifact is; gru, lstm or sasrec = the newest artifact of that type
    # in a folder of artifacts, and an artifact of another type is refused.
    model_type: str = ""
    top_k: int = 10  # items per recommendation list
    history_size: int = 50  # recent items kept per user (exclusion window, explanations later)
    max_purchased: int = 500  # purchased items remembered per user for the never-again filter

    # Filters (stream/core/rerank.py). Purchased items are always excluded, and so are catalog items marked
    # available=false. Categories come from the `items` topic; with an allow list, items without a known
    # category are left out too.
    exclude_viewed_last_n: int = 0  # also exclude the items of the user's last N clicks (0 = off)
    category_allow: str = ""  # comma-separated categories that may be recommended (empty = all)
    category_deny: str = ""  # comma-separated categories never recommended

    # A/B variants as JSON (see stream/core/variants.py); empty = one variant, "default". A user's variant is a
    # hash of experiment_salt and the user id: stable across workers and restarts.
    variants: str = ""
    experiment_salt: str = "streamrec"

    # Re-ranking: maximal marginal relevance over item vectors (0 = off, up to 1 = diversity only), and how
    # many of the user's recent events each item's explanation ("because") names (0 = none).
    diversity: float = 0.0
    explanations: int = 2

    # Cold start: users with fewer events than this get trending items blended into their list (their
    # share shrinks as events arrive); a search is answered from the query alone.
    cold_start_events: int = 5
    trending_half_life_s: float = 6 * 3600.0  # decay of the trending counts, in event time

    # Learning from the stream: "on" emits co-views, keeps the live co-occurrence table and votes with the live
    # neighbour lists; "off" serves the trained model alone. Each item keeps its heaviest
    # ``cooccurrence_neighbours`` successors (space-saving), decayed with ``cooccurrence_half_life_s`` of event
    # time; an item event sends one transition from each of the user's last ``cooccurrence_history`` distinct
    # items. The defaults are those the training recipe fits the live votes' weight with. A changed list is
    # republished at most once per ``neighbours_publish_interval_s`` per item.
    learning: str = "on"
    cooccurrence_neighbours: int = 50
    cooccurrence_half_life_s: float = 2 * 86400.0
    cooccurrence_history: int = 3
    neighbours_publish_interval_s: float = 1.0

    # Searches are taken in micro-batches of up to search_batch_max records, waiting at most
    # search_batch_within_ms for them, so the new queries of a batch are encoded in one forward of the text
    # model (on the worker's one text thread); 1 = one by one.
    search_batch_max: int = 32
    search_batch_within_ms: float = 2.0

    # HNSW parameters (hnswlib): M = graph degree (memory vs recall), ef_construction = build-time beam,
    # ef = query-time beam (must be >= the number of candidates asked for). See index/hnsw.py.
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 100

    store: str = "memory://"  # Faust table store: memory:// or rocksdb:// (needs rocksdict)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9310  # 0 disables the Prometheus endpoint
    # The HTTP API (stream/kafka/http_api.py) on Faust's web server: 127.0.0.1 unless told otherwise; port 0 = off.
    # Workers route a user's request to the worker that owns the user's partition at http://<advertised host>:<port>,
    # so in a cluster bind 0.0.0.0 and advertise a name the other workers resolve (empty: the bind host, or this
    # machine's host name when binding every interface).
    http_host: str = "127.0.0.1"
    http_port: int = 9320
    http_advertised_host: str = ""
    http_token: str = ""  # when set, every /v1 request needs "Authorization: Bearer <token>"; never logged
    log_level: str = "info"
    torch_threads: int = 1  # torch threads in a worker (model loading; the serving step runs in numpy)

    # Faust consumer-group timings; low values make workers ready in seconds instead of 30+.
    session_timeout_s: float = 10.0
    rebalance_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    # Longest a fetch waits at the broker for data (Faust's own is 1,500 ms): a fetch of idle partitions
    # held that long stalls the busy ones behind it (stream/kafka/faust_fetch.py).
    fetch_max_wait_ms: int = 20
    max_event_bytes: int = 64 * 1024  # larger input records are dead-lettered unparsed
    max_future_skew_s: float = 86_400.0  # events stamped further in the future are invalid
    latency_slo_s: float = 0.05  # event-to-recommendation p99 objective; exported for the alert rule

    @property
    def input_topics(self) -> dict[EventType, str]:
        """Map event type -> topic name."""
        return {"click": self.topic_clicks, "search": self.topic_searches, "purchase": self.topic_purchases}

    @property
    def live_config(self) -> LiveConfig | None:
        """The live table's shape (None: learning off)."""
        if self.learning != "on":
            return None
        return LiveConfig(history=self.cooccurrence_history, neighbours=self.cooccurrence_neighbours,
                          half_life_s=self.cooccurrence_half_life_s)

    def variant_specs(self) -> tuple[VariantSpec, ...]:
        """The declared A/B variants, checked (one "default" variant when none are declared)."""
        return parse_variants(self.variants)

    def category_list(self, which: str) -> tuple[str, ...]:
        """The categories of ``category_allow`` or ``category_deny``, parsed."""
        raw = self.category_allow if which == "allow" else self.category_deny
        return tuple(c.strip() for c in raw.split(",") if c.strip())

    @property
    def kafka_jars_dir(self) -> Path:
        """Where the local broker's jars are cached."""
        return self.jars_dir if self.jars_dir is not None else self.home / "kafka-jars"

    @property
    def http_url_host(self) -> str:
        """The host other workers reach this worker's HTTP API at (Faust's canonical URL)."""
        if self.http_advertised_host:
            return self.http_advertised_host
        if self.http_host in ("0.0.0.0", "::"):
            return socket.gethostname()
        return self.http_host

    @property
    def broker_url(self) -> str:
        """The bootstrap servers in Faust's URL form."""
        return ";".join(f"kafka://{s.strip()}" for s in self.bootstrap_servers.split(","))

    def validate(self) -> Settings:
        """Check every setting; raise ConfigError naming the first bad one. Returns self."""
        servers = [s.strip() for s in self.bootstrap_servers.split(",")]
        if not servers or not all(_HOST_PORT.match(s) for s in servers):
            raise ConfigError("bootstrap_servers", f"expected host:port[,host:port], got {self.bootstrap_servers!r}")
        if not self.app_id or not _TOPIC_NAME.match(self.app_id):
            raise ConfigError("app_id", "must be 1-249 characters of letters, digits, '.', '_' or '-'")
        names = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.startswith("topic_")}
        for name, value in names.items():
            if not _TOPIC_NAME.match(value):
                raise ConfigError(name, f"{value!r} is not a valid Kafka topic name")
        if len(set(names.values())) != len(names):
            raise ConfigError("topic_*", "topic names must be distinct")
        for name in ("partitions", "items_partitions", "dead_letter_partitions", "replication_factor"):
            _require(name, getattr(self, name), 1, 10_000)
        _require("top_k", self.top_k, 1, 1000)
        _require("history_size", self.history_size, 1, 10_000)
        _require("max_purchased", self.max_purchased, 0, 100_000)
        _require("hnsw_m", self.hnsw_m, 2, 256)
        _require("hnsw_ef_construction", self.hnsw_ef_construction, self.hnsw_m, 10_000)
        _require("hnsw_ef", self.hnsw_ef, self.top_k, 100_000)
        _require("metrics_port", self.metrics_port, 0, 65535)
        _require("torch_threads", self.torch_threads, 1, 256)
        _require("http_port", self.http_port, 0, 65535)
        if self.http_port and self.http_port == self.metrics_port:
            raise ConfigError("http_port", f"port {self.http_port} is the metrics_port too")
        for name in ("http_host", "http_advertised_host"):
            value = getattr(self, name)
            if (value or name == "http_host") and not _HOST.match(value):
                raise ConfigError(name, f"expected a host name or IP address, got {value!r}")
        if self.http_token and (len(self.http_token) < 16 or not _TOKEN.match(self.http_token)):
            raise ConfigError("http_token", "must be at least 16 characters of letters, digits and -._~+/=")
        _require("fetch_max_wait_ms", self.fetch_max_wait_ms, 1, 30_000)
        _require("max_event_bytes", self.max_event_bytes, 64, 64 * 1024 * 1024)
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError("security_protocol", "expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, "
                                                   f"got {self.security_protocol!r}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                raise ConfigError("sasl_mechanism", f"expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, "
                                                    f"got {self.sasl_mechanism!r}")
            if not self.sasl_username or not self.sasl_password:
                raise ConfigError("sasl_username", f"{self.security_protocol} needs sasl_username and sasl_password")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(name, f"{path} is not a readable file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("ssl_certfile", "ssl_certfile and ssl_keyfile go together (mutual TLS)")
        _require("exclude_viewed_last_n", self.exclude_viewed_last_n, 0, self.history_size)
        overlap = set(self.category_list("allow")) & set(self.category_list("deny"))
        if overlap:
            raise ConfigError("category_deny", f"categories both allowed and denied: {sorted(overlap)}")
        if not 0.0 <= self.diversity <= 1.0:
            raise ConfigError("diversity", f"must be between 0 and 1, got {self.diversity}")
        _require("explanations", self.explanations, 0, 3)
        self.variant_specs()  # raises ConfigError("variants", ...)
        _require("cold_start_events", self.cold_start_events, 0, 10_000)
        _require("search_batch_max", self.search_batch_max, 1, 1000)
        if not 0 < self.search_batch_within_ms <= 1000:
            raise ConfigError("search_batch_within_ms", "must be above 0 and at most 1000 milliseconds")
        if self.learning not in ("on", "off"):
            raise ConfigError("learning", f"expected on or off, got {self.learning!r}")
        _require("cooccurrence_neighbours", self.cooccurrence_neighbours, 1, 1000)
        _require("cooccurrence_history", self.cooccurrence_history, 1, 3)
        for name in ("cooccurrence_half_life_s", "neighbours_publish_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, "must be a positive number of seconds")
        if not self.trending_half_life_s > 0:
            raise ConfigError("trending_half_life_s", "must be a positive number of seconds")
        if self.model_type not in ("", "gru", "lstm", "sasrec"):
            raise ConfigError("model_type", f"expected gru, lstm or sasrec (or empty), got {self.model_type!r}")
        if self.store not in ("memory://", "rocksdb://"):
            raise ConfigError("store", f"expected memory:// or rocksdb://, got {self.store!r}")
        if self.store == "rocksdb://" and importlib.util.find_spec("rocksdict") is None:
            raise ConfigError("store", "rocksdb:// needs the rocksdict package: pip install 'streamrec[rocksdb]'")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", "expected debug, info, warning or error")
        for name in ("session_timeout_s", "rebalance_timeout_s", "heartbeat_interval_s", "max_future_skew_s",
                     "latency_slo_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, "must be a positive number of seconds")
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ConfigError("heartbeat_interval_s", "must be below session_timeout_s")
        if self.model_path is not None and not self.model_path.is_dir():
            raise ConfigError("model_path", f"{self.model_path} is not a directory (train one: streamrec train)")
        return self

    def to_env(self) -> dict[str, str]:
        """The STREAMREC_* variables that reproduce these settings in a child process."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[ENV_PREFIX + f.name.upper()] = str(value)
        return out

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (values already typed)."""
        return dataclasses.replace(self, **changes)


def _require(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")


def _convert(name: str, kind: Any, raw: str) -> Any:
    """Turn one textual value into the field's type, or raise ConfigError naming the setting."""
    text = raw.strip()
    try:
        if kind in (int, "int"):
            return int(text)
        if kind in (float, "float"):
            return float(text)
        if kind in (Path, "Path"):
            return Path(text).expanduser()
        if kind in ("Path | None",):
            return Path(text).expanduser() if text else None
        return text
    except ValueError:
        raise ConfigError(name, f"cannot read {raw!r} as {getattr(kind, '__name__', kind)}") from None


def load_settings(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from STREAMREC_* variables and explicit overrides, then validate them.

    Unknown STREAMREC_* variables are an error, so a typo cannot silently fall back to a default.
    Overrides whose value is None are ignored (unset CLI flags).
    """
    environ = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in fields:
            raise ConfigError(name, f"unknown setting (from environment variable {key})")
        values[name] = _convert(name, fields[name].type, raw)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in fields:
            raise ConfigError(name, "unknown setting")
        values[name] = _convert(name, fields[name].type, value) if isinstance(value, str) else value
    return Settings(**values).validate()
