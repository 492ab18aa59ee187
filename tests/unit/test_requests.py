"""The HTTP API's requests without Kafka: parameter checks, and the request-time list over the real artifact
(the same list an event's state gives, request filters, cold start, no state change)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from encoders.artifact import ModelArtifact
from encoders.serving import UserEncoder
from index.brute import BruteForceIndex
from stream.core.pipeline import Recommender, Rules
from stream.core.requests import MAX_K, ListRequest, SimilarRequest, parse_k, parse_list_request, parse_similar_request
from stream.core.schemas import MAX_ID_LEN, ItemRecord, Source
from stream.core.trending import Trending
from stream.errors import InvalidRequest
from tests.recommenders import single_model

NOW = 1_700_000_000.0
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def make(artifact: ModelArtifact, rules: Rules) -> Recommender:
    encoder = UserEncoder(artifact)
    index = BruteForceIndex(encoder.dim)
    index.add(encoder.item_ids, encoder.item_vectors())
    return single_model(encoder, index, rules, clock=lambda: NOW, trending=Trending(3600.0))


def click(rec: Recommender, states: dict[str, bytes], user: str, item: str, n: int) -> list[str]:
    raw = orjson.dumps({"schema_version": 1, "user_id": user, "item_id": item, "ts": NOW - 1,
                        "event_id": f"{user}-{n}"})
    out = rec.process("click", raw, user.encode(), Source("clicks", 0, n), states)
    assert out.recommendation is not None
    return [it.item_id for it in out.recommendation.items]


@pytest.mark.parametrize(("raw", "expected"), [(None, 10), ("1", 1), ("100", 100), ("007", 7), (" 5 ", 5)])
def test_k_within_1_to_100_is_taken(raw: str | None, expected: int) -> None:
    assert parse_k(raw, 10) == expected


@pytest.mark.parametrize("raw", ["0", "101", "-1", "+5", "1e2", "0x10", "", "five", "1.0", "9" * 5000, "٣"])
def test_k_out_of_range_or_not_an_integer_names_k(raw: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_k(raw, 10)
    assert caught.value.parameter == "k"


def test_list_request_parameters() -> None:
    parsed = parse_list_request("u1", {"k": "5", "category": "Drama", "exclude": "a, b,,c", "_": "cache"},
                                {"Drama", "Comedy"}, 10)
    assert parsed == ListRequest("u1", 5, "Drama", frozenset({"a", "b", "c"}))
    assert parse_list_request("u1", {}, set(), 200).k == MAX_K  # the default is capped to what k may be
    for user, query, parameter in [("u" * (MAX_ID_LEN + 1), {}, "user_id"), ("", {}, "user_id"),
                                   ("a\x00b", {}, "user_id"), ("u1", {"category": "Horror"}, "category"),
                                   ("u1", {"exclude": "x" * (MAX_ID_LEN + 1)}, "exclude"),
                                   ("u1", {"exclude": ",".join(map(str, range(1001)))}, "exclude"),
                                   ("u1", {"k": "0"}, "k")]:
        with pytest.raises(InvalidRequest) as caught:
            parse_list_request(user, query, {"Drama"}, 10)
        assert caught.value.parameter == parameter, (user[:10], query)
    assert parse_list_request("u" * MAX_ID_LEN, {}, set(), 10).user_id == "u" * MAX_ID_LEN  # the decoder's limit
    assert parse_similar_request("318", {"k": "3"}, 10) == SimilarRequest("318", 3)


def test_the_request_list_is_the_list_the_users_last_event_got_and_changes_nothing(artifact: ModelArtifact) -> None:
    rec = make(artifact, Rules(top_k=10, explanations=2))
    states: dict[str, bytes] = {}
    items = artifact.item_ids
    click(rec, states, "u1", items[3], 0)
    last = click(rec, states, "u1", items[9], 1)
    before = dict(states)
    answer = rec.current_list(ListRequest("u1", 10), states)
    assert [it.item_id for it in answer.items] == last
    assert (answer.user_id, answer.state_seq, answer.cold_start) == ("u1", 2, False)
    assert all(it.because for it in answer.items)  # explained as an event's list is
    assert states == before and states["u1"] is before["u1"]  # nothing written
    # The next event's list is the one it would have been without the request.
    twin: dict[str, bytes] = {}
    other = make(artifact, Rules(top_k=10, explanations=2))
    click(other, twin, "u1", items[3], 0)
    click(other, twin, "u1", items[9], 1)
    assert click(rec, states, "u1", items[27], 2) == click(other, twin, "u1", items[27], 2)
    assert states["u1"] == twin["u1"]
    body = orjson.loads(answer.to_json())
    assert body["event"] is None and body["source"] == "request" and body["cold_start"] is False
    schema = json.loads((SCHEMAS / "recommendation.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(body)
    with pytest.raises(jsonschema.ValidationError):  # a request's record has no event, a topic's has one
        jsonschema.Draft202012Validator(schema).validate({**body, "event": {"type": "click", "event_id": "e",
                                                                            "ts": 1.0}})


def test_request_filters_k_exclude_and_category(artifact: ModelArtifact) -> None:
    rec = make(artifact, Rules(top_k=10))
    states: dict[str, bytes] = {}
    items = artifact.item_ids
    full = click(rec, states, "u2", items[5], 0)
    assert [it.item_id for it in rec.current_list(ListRequest("u2", 3), states).items] == full[:3]
    dropped = rec.current_list(ListRequest("u2", 10, exclude=frozenset(full[:2])), states)
    assert [it.item_id for it in dropped.items][:8] == full[2:]
    # A category of a few items far down the ranking: the list holds them all and nothing else.
    far = items[-7:]
    rec.apply_items([ItemRecord(item, title=f"t{item}", category="Rare") for item in far] +
                    [ItemRecord(items[0], title="t", category="Common")])
    rare = rec.current_list(ListRequest("u2", 10, category="Rare"), states)
    assert sorted(it.item_id for it in rare.items) == sorted(far)
    assert [it.score for it in rare.items] == sorted((it.score for it in rare.items), reverse=True)
    assert set(rec.catalog.categories()) == {"Rare", "Common"}


def test_an_unknown_user_gets_the_trending_list_marked_cold_start(artifact: ModelArtifact) -> None:
    rec = make(artifact, Rules(top_k=10, cold_start_events=0))  # even with the event path's blend off
    states: dict[str, bytes] = {}
    hot = artifact.item_ids[100]
    for n in range(20):
        click(rec, states, f"crowd{n}", hot if n % 2 else artifact.item_ids[200 + n], n)
    answer = rec.current_list(ListRequest("stranger", 10), states)
    assert answer.cold_start and answer.state_seq == 0
    assert answer.items[0].item_id == hot and all(it.because == ("trending",) for it in answer.items)
    assert "stranger" not in states


def test_similar_items_exclude_the_item_and_follow_the_catalog(artifact: ModelArtifact) -> None:
    rec = make(artifact, Rules(top_k=10))
    item = artifact.item_ids[42]
    found = rec.similar(SimilarRequest(item, 5))
    assert found is not None and len(found.items) == 5 and item not in [it.item_id for it in found.items]
    schema = json.loads((SCHEMAS / "similar-items.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(orjson.loads(found.to_json()))
    gone = found.items[0].item_id
    rec.apply_items([ItemRecord(gone, title="x", available=False)])
    again = rec.similar(SimilarRequest(item, 5))
    assert again is not None and gone not in [it.item_id for it in again.items]
    assert rec.similar(SimilarRequest("no-such-item", 5)) is None
    rec.apply_items([ItemRecord(item, deleted=True)])
    assert rec.similar(SimilarRequest(item, 5)) is None
