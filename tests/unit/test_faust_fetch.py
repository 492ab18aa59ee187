"""The consumer's fetch wait: Faust hard-codes 1,500 ms; streamrec's apps take ``fetch_max_wait_ms``."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from stream.config import load_settings
from stream.errors import ConfigError
from stream.kafka.faust_fetch import FetchTransport
from stream.kafka.faust_options import app_options, new_app


async def test_a_streamrec_app_consumer_waits_the_configured_time_where_faust_waits_1500_ms(tmp_path: Path) -> None:
    settings = load_settings({"home": tmp_path, "fetch_max_wait_ms": 37}, env={})
    app = new_app(settings)
    assert isinstance(app.transport, FetchTransport)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # what the worker starts
    assert consumer._fetch_max_wait_ms == 37
    plain = faust.App("plain", datadir=str(tmp_path / "plain"), **app_options(settings))
    assert plain.consumer._thread._create_worker_consumer(plain.transport)._fetch_max_wait_ms == 1500


def test_a_fetch_wait_out_of_range_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="fetch_max_wait_ms"):
        load_settings(env={"STREAMREC_FETCH_MAX_WAIT_MS": "0"})
