"""The JSON Schemas in schemas/ are the contract of every record: the worker's decoders accept exactly the
documents the schemas accept (generated valid and invalid ones, checked by the `jsonschema` library), and
what the worker writes (lists, dead letters) validates against theirs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.pipeline import Recommender
from stream.core.schemas import Source, decode_erasure, decode_event, decode_item, decode_release
from stream.errors import InvalidEvent

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NOW = 1e30  # far ahead of every generated ts: "ts_in_future" depends on the worker's clock, not the document
SRC = Source("t", 0, 1)
checker = jsonschema.FormatChecker()
checker.checks("printable")(lambda value: not isinstance(value, str) or value.isprintable())
AGREED: Counter[tuple[str, bool]] = Counter()


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


VALIDATORS = {name: validator(name) for name in ("click", "search", "purchase", "erasure", "item", "model-release",
                                                   "recommendation", "dead-letter")}

values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(min_value=-1e11, max_value=1e11, allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2.0, 1.5, -1, 2**53, 2**53 - 1, 9007199254740993.0]),
    st.text(max_size=12), st.sampled_from(["", " ", "  a  ", "\t", "a\x00b", "\u00a0", "id\u200b", "x" * 256, "x" * 257,
                                          "q" * 1024, "q" * 1025, "🚀", "\x1c"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = {
    "click": ("schema_version", "user_id", "ts", "event_id", "session_id", "item_id"),
    "search": ("schema_version", "user_id", "ts", "event_id", "session_id", "query"),
    "purchase": ("schema_version", "user_id", "ts", "event_id", "session_id", "item_id", "quantity", "price"),
    "erasure": ("schema_version", "user_id", "ts", "event_id", "session_id"),
    "item": ("schema_version", "item_id", "deleted", "available", "title", "category", "price"),
    "model-release": ("schema_version", "path", "version", "published_at", "variant"),
}
VALID = {
    "click": {"schema_version": 1, "user_id": "u1", "ts": 1.7e9, "item_id": "i1"},
    "search": {"schema_version": 1, "user_id": 7, "ts": 1.7e9, "query": "dark comedy"},
    "purchase": {"schema_version": 1, "user_id": "u1", "ts": 1.7e9, "item_id": 318, "quantity": 2, "price": 9.5},
    "erasure": {"schema_version": 1, "user_id": "u1", "ts": 1.7e9},
    "item": {"schema_version": 1, "item_id": "318", "title": "Heat (1995)", "category": "Action"},
    "model-release": {"schema_version": 1, "path": "/models/gru-1", "version": "gru-1", "published_at": 1.7e9},
}


def documents(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """The valid document with some of its fields (or others of the kind) dropped or replaced."""
    how = st.one_of(st.just("drop"), values.map(lambda v: ("set", v)))
    changes = st.dictionaries(st.sampled_from(FIELDS[kind]), how, max_size=3)

    def apply(change: dict[str, Any]) -> dict[str, Any]:
        doc = dict(VALID[kind])
        for name, how in change.items():
            if how == "drop":
                doc.pop(name, None)
            else:
                doc[name] = how[1]
        return doc

    return changes.map(apply)


def decodes(kind: str, doc: dict[str, Any]) -> bool:
    raw = json.dumps(doc).encode()
    try:
        if kind in ("click", "search", "purchase"):
            decode_event(kind, raw, SRC, now=NOW)  # type: ignore[arg-type]
        elif kind == "erasure":
            decode_erasure(raw, SRC, now=NOW)
        elif kind == "item":
            item_id = doc.get("item_id")
            if isinstance(item_id, float) and item_id.is_integer():
                item_id = int(item_id)
            decode_item(raw, str(item_id).encode())  # the key matches: the key check is not the document's
        else:
            decode_release(raw)
    except InvalidEvent:
        return False
    return True


def agree(kind: str, doc: dict[str, Any]) -> None:
    valid = VALIDATORS[kind].is_valid(doc)
    assert decodes(kind, doc) == valid, (kind, doc, [e.message for e in VALIDATORS[kind].iter_errors(doc)])
    AGREED[kind, valid] += 1


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(FIELDS)).flatmap(lambda kind: st.tuples(st.just(kind), documents(kind))))
def test_the_decoders_accept_exactly_what_the_schemas_accept(case: tuple[str, dict[str, Any]]) -> None:
    agree(*case)


def test_the_valid_examples_are_valid_and_both_outcomes_were_seen() -> None:
    for kind, doc in VALID.items():
        agree(kind, doc)
    test_the_decoders_accept_exactly_what_the_schemas_accept()  # run the property here too, for the counts
    print("\nagreement (kind, valid by the schema) -> documents:", dict(sorted(AGREED.items())))
    assert all(AGREED[kind, True] > 0 and AGREED[kind, False] > 0 for kind in FIELDS), AGREED


def test_what_the_worker_writes_validates(recommender: Recommender) -> None:
    item = recommender.served.encoder.item_ids[0]
    raw = orjson.dumps({"schema_version": 1, "user_id": "u1", "item_id": item, "ts": 1_699_999_999.0})
    out = recommender.process("click", raw, b"u1", Source("clicks", 0, 1), {})
    assert out.value is not None
    VALIDATORS["recommendation"].validate(orjson.loads(out.value))
    search = orjson.dumps({"schema_version": 1, "user_id": "u1", "query": "noir", "ts": 1_699_999_999.5})
    listed = recommender.process("search", search, b"u1", Source("searches", 0, 1), {})
    assert listed.value is not None
    VALIDATORS["recommendation"].validate(orjson.loads(listed.value))
    for bad in (b"{nope", b'{"schema_version": 1}', None):
        letter = recommender.process("click", bad, b"u1", Source("clicks", 0, 2), {})
        assert letter.dead_letter and letter.value is not None
        VALIDATORS["dead-letter"].validate(orjson.loads(letter.value))
