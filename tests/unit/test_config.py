"""Settings: environment parsing and start-time validation that names the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import Settings, load_settings
from stream.errors import ConfigError


def test_defaults_are_valid() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert s.input_topics == {"click": "clicks", "search": "searches", "purchase": "purchases"}


def test_environment_and_overrides() -> None:
    s = load_settings({"top_k": 5}, env={"STREAMREC_PARTITIONS": "8", "STREAMREC_HOME": "/tmp/x",
                                         "STREAMREC_BOOTSTRAP_SERVERS": "a:1,b:2"})
    assert (s.partitions, s.home, s.top_k) == (8, Path("/tmp/x"), 5)
    assert s.broker_url == "kafka://a:1;kafka://b:2"


@pytest.mark.parametrize(("env", "setting"), [
    ({"STREAMREC_PARTITIONS": "four"}, "partitions"),
    ({"STREAMREC_PARTITIONS": "0"}, "partitions"),
    ({"STREAMREC_TOPK": "3"}, "topk"),
    ({"STREAMREC_BOOTSTRAP_SERVERS": "localhost"}, "bootstrap_servers"),
    ({"STREAMREC_TOPIC_CLICKS": "bad topic"}, "topic_clicks"),
    ({"STREAMREC_STORE": "redis://"}, "store"),
    ({"STREAMREC_HNSW_EF": "3"}, "hnsw_ef"),
    ({"STREAMREC_MODEL_PATH": "/nonexistent/model"}, "model_path"),
    ({"STREAMREC_HEARTBEAT_INTERVAL_S": "30"}, "heartbeat_interval_s"),
    ({"STREAMREC_SECURITY_PROTOCOL": "TLS"}, "security_protocol"),
    ({"STREAMREC_SECURITY_PROTOCOL": "SASL_SSL"}, "sasl_username"),
    ({"STREAMREC_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "STREAMREC_SASL_MECHANISM": "GSSAPI",
      "STREAMREC_SASL_USERNAME": "u", "STREAMREC_SASL_PASSWORD": "p"}, "sasl_mechanism"),
    ({"STREAMREC_SSL_CAFILE": "/nonexistent/ca.pem"}, "ssl_cafile"),
    ({"STREAMREC_HTTP_PORT": "70000"}, "http_port"),
    ({"STREAMREC_HTTP_PORT": "9310"}, "http_port"),  # the metrics port
    ({"STREAMREC_HTTP_HOST": "bad host"}, "http_host"),
    ({"STREAMREC_HTTP_ADVERTISED_HOST": "a/b"}, "http_advertised_host"),
    ({"STREAMREC_HTTP_TOKEN": "short"}, "http_token"),
    ({"STREAMREC_HTTP_TOKEN": "a token with spaces in it"}, "http_token"),
    ({"STREAMREC_CATEGORY_ALLOW": "a,b", "STREAMREC_CATEGORY_DENY": "b"}, "category_deny"),
    ({"STREAMREC_EXCLUDE_VIEWED_LAST_N": "-1"}, "exclude_viewed_last_n"),
    ({"STREAMREC_MODEL_TYPE": "transformer"}, "model_type"),
])
def test_bad_settings_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_duplicate_topic_names_rejected() -> None:
    with pytest.raises(ConfigError, match="distinct"):
        load_settings({"topic_searches": "clicks"}, env={})


def test_every_setting_is_documented_in_the_example() -> None:
    import dataclasses

    example = (Path(__file__).resolve().parents[2] / "deploy" / "streamrec.env.example").read_text()
    for f in dataclasses.fields(Settings):
        assert f"STREAMREC_{f.name.upper()}=" in example, f"{f.name} missing from deploy/streamrec.env.example"


def test_security_settings_reach_every_kafka_client() -> None:
    import faust

    from stream.kafka.clients import client_options, faust_credentials

    plain = load_settings(env={})
    assert client_options(plain) == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(plain) is None
    sasl = load_settings(env={"STREAMREC_SECURITY_PROTOCOL": "SASL_SSL", "STREAMREC_SASL_MECHANISM": "SCRAM-SHA-512",
                              "STREAMREC_SASL_USERNAME": "shop", "STREAMREC_SASL_PASSWORD": "secret"})
    options = client_options(sasl)
    assert (options["security_protocol"], options["sasl_mechanism"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SASL_SSL", "SCRAM-SHA-512", "shop", "secret")
    assert options["ssl_context"] is not None
    credentials = faust_credentials(sasl)
    assert isinstance(credentials, faust.SASLCredentials) and credentials.username == "shop"
