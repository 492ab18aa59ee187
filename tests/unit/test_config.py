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
