"""A/B variants: the declaration, a deterministic and stable split, and each variant served with its own
model and rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import orjson
import pytest
from prometheus_client import CollectorRegistry

from encoders.artifact import ModelArtifact
from encoders.serving import UserEncoder
from index.brute import BruteForceIndex
from stream.core.catalog import Catalog
from stream.core.indexed_model import IndexedModel
from stream.core.metrics import Metrics
from stream.core.pipeline import Arm, Recommender, Rules
from stream.core.schemas import Source
from stream.core.trending import Trending
from stream.core.variants import Assignment, parse_variants
from stream.errors import ConfigError

SPEC = json.dumps([{"name": "control", "share": 0.5}, {"name": "sasrec", "share": 0.3},
                   {"name": "diverse", "share": 0.2, "diversity": 0.4}])


def test_split_ratios_over_ten_thousand_users_and_stability() -> None:
    specs = parse_variants(SPEC)
    assignment = Assignment(specs, "exp-7")
    users = [f"user-{n}" for n in range(10_000)]
    counts = Counter(assignment.variant_of(u) for u in users)
    for spec in specs:
        assert abs(counts[spec.name] / len(users) - spec.share) <= 0.02, (spec.name, counts)
    # Stable: another Assignment, and another process with another hash seed, give every user the same variant.
    again = Assignment(parse_variants(SPEC), "exp-7")
    assert all(again.variant_of(u) == assignment.variant_of(u) for u in users)
    code = ("import json,sys; from stream.core.variants import Assignment, parse_variants; "
            f"a = Assignment(parse_variants({SPEC!r}), 'exp-7'); "
            "print(json.dumps([a.variant_of(f'user-{n}') for n in range(500)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"PYTHONHASHSEED": "12345"})
    assert json.loads(out.stdout) == [assignment.variant_of(u) for u in users[:500]]
    # Another salt is another experiment: a different split of the same users.
    other = Assignment(specs, "exp-8")
    assert sum(other.variant_of(u) != assignment.variant_of(u) for u in users) > 3000


@pytest.mark.parametrize("raw", [
    "not json", "{}", "[]", '[{"name": "a", "share": 0.5}]',
    '[{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]',
    '[{"name": "a b", "share": 1}]', '[{"name": "a", "share": 1, "diversity": 2}]',
    '[{"name": "a", "share": 1, "model": "/nonexistent"}]', '[{"name": "a", "share": 1, "colour": "red"}]',
])
def test_bad_declarations_name_the_setting(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_variants(raw)
    assert info.value.setting == "variants"


def test_each_variant_is_served_by_its_own_model_and_rules(artifact: ModelArtifact) -> None:
    arms = []
    for name, diversity in (("control", 0.0), ("diverse", 0.8)):
        encoder = UserEncoder(artifact)
        encoder.version = f"model-{name}"
        index = BruteForceIndex(encoder.dim)
        index.add(encoder.item_ids, encoder.item_vectors())
        arms.append(Arm(name, IndexedModel(encoder, index), Rules(top_k=10, diversity=diversity)))
    registry = CollectorRegistry()
    assignment = Assignment(parse_variants('[{"name": "control", "share": 0.5}, {"name": "diverse", "share": 0.5}]'),
                            "s")
    rec = Recommender(arms, assignment, Catalog(), Trending(3600.0), Metrics(registry))
    item = artifact.item_ids[7]
    lists = {}
    for n in range(40):
        user = f"u{n}"
        raw = orjson.dumps({"schema_version": 1, "user_id": user, "item_id": item, "ts": 1_700_000_000.0,
                            "event_id": f"e{n}"})
        out = rec.process("click", raw, user.encode(), Source("clicks", 0, n), {}).recommendation
        assert out is not None and out.variant == assignment.variant_of(user)
        assert out.model_version == f"model-{out.variant}"
        lists[out.variant] = [i.item_id for i in out.items]
    assert lists["control"] != lists["diverse"]  # same user state, different re-ranking
    per_variant = {v: registry.get_sample_value("streamrec_worker_recommendations_total",
                                                {"event_type": "click", "variant": v}) for v in ("control", "diverse")}
    assert per_variant["control"] and per_variant["diverse"] and sum(per_variant.values()) == 40
