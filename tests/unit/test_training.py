"""Training on real data: temporal split, fixed seed, full-ranking metrics, artifact round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from encoders.artifact import latest_artifact, load_artifact
from encoders.training.sequences import build_sequences, build_vocabulary, temporal_cutoff, training_windows
from stream.errors import ArtifactError
from stream.tools.datasets import load_events


def test_artifact_files_and_metrics(artifact_dir: Path) -> None:
    art = load_artifact(artifact_dir)
    assert art.version == artifact_dir.name and art.version.startswith("gru-diginetica-")
    assert len(art.item_ids) == art.model.config.n_items
    ev = art.metrics["eval"]
    assert ev["gru"]["events"] == ev["popularity"]["events"] == ev["item_knn"]["events"] > 100
    for name in ("gru", "popularity", "item_knn"):
        m = ev[name]
        assert 0.0 <= m["recall@10"] <= m["recall@20"] <= 1.0
        assert 0.0 <= m["mrr@20"] <= m["recall@20"] and 0.0 < m["coverage@20"] <= 1.0 and m["novelty"] > 0
    assert ev["popularity"]["coverage@20"] < ev["item_knn"]["coverage@20"]  # one list for all vs personal lists
    assert art.metrics["split"]["kind"] == "temporal"
    assert latest_artifact(artifact_dir.parent, "diginetica", "gru") == artifact_dir


def test_windows_use_only_events_before_the_cutoff(data_dir: Path) -> None:
    events = load_events("diginetica", data_dir)
    cutoff = temporal_cutoff(events, 0.1)
    vocab = build_vocabulary(events, cutoff)
    seqs = build_sequences(events, vocab, 1024, 4)
    _, _, _, targets, _ = training_windows(seqs, cutoff, 16)
    before = sum(int(np.searchsorted(s.ts, cutoff)) - 1 for s in seqs.values() if np.searchsorted(s.ts, cutoff) > 1)
    assert int((targets != 0).sum()) <= before  # every target is an event before the cutoff
    later = {e.item_id for e in events if e.ts >= cutoff} - {e.item_id for e in events if e.ts < cutoff}
    assert later and not later & set(vocab)  # items first seen after the cutoff are unknown to the model


@pytest.mark.parametrize("damage", ["missing_weights", "bad_json", "wrong_items"])
def test_damaged_artifacts_are_refused(artifact_dir: Path, tmp_path: Path, damage: str) -> None:
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(artifact_dir, copy)
    if damage == "missing_weights":
        (copy / "model.safetensors").unlink()
    elif damage == "bad_json":
        (copy / "config.json").write_text("{")
    else:
        (copy / "items.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(ArtifactError):
        load_artifact(copy)


def test_datasets_are_time_ordered_with_documented_counts(data_dir: Path) -> None:
    ml = load_events("movielens", data_dir)
    assert len(ml) == 100836 + 3683  # ratings + tags (SOURCE.txt)
    assert {e.type for e in ml} == {"click", "search", "purchase"}
    yc = load_events("yoochoose", data_dir)
    assert len(yc) == 329537 + 11825
    for events in (ml, yc, load_events("diginetica", data_dir)):
        ts = [e.ts for e in events]
        assert ts == sorted(ts)


def test_item_knn_recommends_co_occurring_and_repeated_items() -> None:
    from encoders.training.baselines import ItemKnn
    from encoders.training.sequences import UserSequence

    def seq(items: list[int], start: float) -> UserSequence:
        n = len(items)
        return UserSequence(np.array(items), np.ones(n, np.int64), np.zeros((n, 2), np.int64),
                            np.arange(n, dtype=np.float64) + start)

    train = ({f"u{n}": seq([1, 2, 3], 0.0) for n in range(5)} | {f"w{n}": seq([1, 2], 0.0) for n in range(3)}
             | {"v": seq([4, 5], 0.0)})
    knn = ItemKnn(train | {"test": seq([1, 4], 100.0)}, cutoff=50.0, n_items=5)
    scores = knn.scores(seq([1, 4], 100.0), [1])[0]  # history: item 1
    assert scores[2] > scores[3] > scores[5] == 0.0  # 2 is with 1 more often than 3; 5 never
    assert scores[1] > 0  # the item just clicked stays a candidate (repeat-aware)


def test_evaluate_reproduces_training_metrics(artifact_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    from stream.tools.report import evaluate_artifacts

    table = evaluate_artifacts([artifact_dir], data_dir, tmp_path, max_events=20_000)
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.json", "report.md", "metrics.png"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == table
    trained = load_artifact(artifact_dir).metrics["eval"]
    assert set(table) == {"gru", "popularity", "item_knn"}
    for name in table:
        assert table[name] == pytest.approx(trained[name], abs=1e-9)  # same split, same events, same scorer


def test_served_repeat_scores_equal_offline_scores() -> None:
    """UserEncoder.rescore gives the recent items exactly the scores the offline evaluation gives."""
    import torch

    from encoders.artifact import ModelArtifact
    from encoders.models.gru import RecurrentConfig, RecurrentModel
    from encoders.models.session_head import SessionHeadConfig
    from encoders.serving import UserEncoder
    from encoders.training.evaluation import model_scorer
    from encoders.training.sequences import UserSequence

    torch.manual_seed(3)
    model = RecurrentModel(RecurrentConfig(n_items=30, dim=8, hidden=8, head=SessionHeadConfig(repeat_window=4))).eval()
    assert model.repeat is not None
    with torch.no_grad():
        model.repeat.weight.normal_()
    ids = [f"i{n}" for n in range(1, 31)]
    encoder = UserEncoder(ModelArtifact(model, ids, "v", "test", {}, Path(".")))
    kinds = ["click", "click", "search", "purchase", "click", "click", "click"]
    rows = [5, 7, 0, 5, 9, 2, 7]
    seq = UserSequence(np.array(rows), np.array([{"click": 1, "search": 2, "purchase": 3}[k] for k in kinds]),
                       np.zeros((7, 8), np.int64), np.arange(7, dtype=np.float64))
    offline = model_scorer(model)(seq, [7 - 1])[0]  # scores for the event after the first six
    state = encoder.initial_state()
    recent = []
    for kind, row in zip(kinds[:6], rows[:6], strict=True):
        item = ids[row - 1] if row else None
        state = encoder.step(state, kind, item)
        if item is not None:
            recent.append((kind, item))
    served = dict(encoder.rescore(encoder.query_vector(state), recent, []))
    assert set(served) == {"i7", "i5", "i9", "i2"}  # the last 4 item events (repeat_window)
    for item, score in served.items():
        assert abs(score - offline[int(item[1:])]) <= 1e-5


def test_mix_adds_item_knn_votes_to_the_model_scores() -> None:
    """A mixed model scores inner product + c * repeat bonus + w * item-kNN's session score, offline and online."""
    import torch

    from encoders.artifact import ModelArtifact
    from encoders.models.gru import RecurrentConfig, RecurrentModel
    from encoders.models.session_head import SessionHeadConfig
    from encoders.serving import UserEncoder
    from encoders.training.baselines import ItemKnn
    from encoders.training.evaluation import model_scorer
    from encoders.training.item_knn_mix import Mix, knn_table, with_mix
    from encoders.training.sequences import UserSequence

    def seq(items: list[int], start: float) -> UserSequence:
        n = len(items)
        return UserSequence(np.array(items), np.ones(n, np.int64), np.zeros((n, 8), np.int64),
                            np.arange(n, dtype=np.float64) + start)

    train = {f"u{n}": seq([1, 2, 3, 6], 0.0) for n in range(5)} | {"v": seq([4, 5, 1], 0.0)}
    knn = ItemKnn(train, cutoff=50.0, n_items=6)
    torch.manual_seed(4)
    model = RecurrentModel(RecurrentConfig(n_items=6, dim=8, hidden=8, head=SessionHeadConfig(repeat_window=4))).eval()
    assert model.repeat is not None
    with torch.no_grad():
        model.repeat.weight.normal_()
    mixed = with_mix(model, knn_table(knn.similarity, 7), Mix(repeat_scale=0.5, knn_weight=3.0, validation={}))
    history = seq([1, 4, 2, 1], 100.0)
    q = model.history_queries(torch.from_numpy(history.items), torch.from_numpy(history.types),
                              torch.from_numpy(history.tokens), [3]).detach().numpy()[0]
    inner = model.item_weight().detach().numpy() @ q
    repeat = model_scorer(model)(history, [3])[0] - inner
    expected = inner + 0.5 * repeat + 3.0 * knn.scores(history, [3])[0]
    got = model_scorer(mixed)(history, [3])[0]
    assert np.abs(got[1:] - expected[1:]).max() <= 1e-5
    ids = [f"i{n}" for n in range(1, 7)]
    encoder = UserEncoder(ModelArtifact(mixed, ids, "v", "test", {}, Path(".")))
    state = encoder.initial_state()
    for row in history.items[:3]:
        state = encoder.step(state, "click", ids[row - 1])
    served = dict(encoder.rescore(encoder.query_vector(state), [("click", ids[r - 1]) for r in history.items[:3]],
                                  []))
    assert set(served) == {"i1", "i2", "i3", "i4", "i5", "i6"}  # the recent items and their co-occurring items
    for item, score in served.items():
        assert abs(score - got[int(item[1:])]) <= 1e-5


def test_tied_targets_count_at_a_random_position_among_their_ties() -> None:
    from encoders.training.evaluation import _metrics

    alone = _metrics([(3, 1)], 0, 100, [0.0])  # rank 4, no ties: the plain definitions
    assert alone["recall@10"] == 1.0 and abs(alone["mrr@20"] - 0.25) < 1e-12
    assert abs(alone["ndcg@10"] - 1 / math.log2(5)) < 1e-12
    tied = _metrics([(5, 95)], 0, 100, [0.0])  # 5 items above, tied with 94 others (a kNN zero score)
    assert abs(tied["recall@20"] - 15 / 95) < 1e-12 and abs(tied["recall@10"] - 5 / 95) < 1e-12
    assert abs(tied["mrr@20"] - sum(1 / (j + 1) for j in range(5, 20)) / 95) < 1e-12
    missed = _metrics([(25, 1), (100, 1)], 0, 100, [0.0, 0.0])
    assert missed["recall@20"] == missed["mrr@20"] == missed["ndcg@10"] == 0.0


def test_every_model_has_the_one_session_head_default() -> None:
    """The head and re-ranker fields live in SessionHeadConfig only, and every model (and training) takes its
    defaults: a model config that declares one of them again, or a default of its own, fails here."""
    import dataclasses

    from encoders.models.gru import RecurrentConfig
    from encoders.models.registry import MODELS, build_model
    from encoders.models.session_head import FLAT_FIELDS, SessionHeadConfig
    from encoders.models.transformer import SasrecConfig

    for config_type in (RecurrentConfig, SasrecConfig):
        own = {f.name: f for f in dataclasses.fields(config_type)}
        assert not set(FLAT_FIELDS) & set(own), config_type  # no flat copy beside ``head``
        assert own["head"].default_factory is SessionHeadConfig, config_type  # no default of its own
    defaults = SessionHeadConfig()
    assert RecurrentConfig(n_items=3).head == SasrecConfig(n_items=3).head == defaults
    assert all(build_model(name, 3).config.head == defaults for name in MODELS)
    flat = [build_model(name, 3).config.to_dict() for name in MODELS]
    assert all({k: f[k] for k in FLAT_FIELDS} == defaults.to_flat() for f in flat)
    assert defaults.repeat_window == 50 and defaults.neighbours == 0 and defaults.ranker is None


def test_a_trained_artifact_keeps_the_flat_config_and_the_default_head(artifact_dir: Path) -> None:
    from encoders.models.registry import model_from_config
    from encoders.models.session_head import FLAT_FIELDS, SessionHeadConfig

    saved = json.loads((artifact_dir / "config.json").read_text())["model_config"]
    assert "head" not in saved and set(FLAT_FIELDS) <= set(saved)  # the flat form older artifacts have
    art = load_artifact(artifact_dir)
    assert art.model.config.head == SessionHeadConfig()  # training adds nothing to the model default
    assert art.model.config.to_dict() == saved
    assert model_from_config("gru", saved).config == art.model.config


@pytest.mark.parametrize("name", ["gru", "lstm", "sasrec"])
@pytest.mark.parametrize("head", ["default", "off", "neighbours and ranker"])
def test_flat_model_config_round_trip(name: str, head: str) -> None:
    """``model_from_config(name, config.to_dict())`` (through JSON, as an artifact) rebuilds an equal model."""
    import torch

    from encoders.models.ranker import RankerShape
    from encoders.models.registry import build_model, model_from_config
    from encoders.models.session_head import FLAT_FIELDS, SessionHeadConfig

    heads = {"default": SessionHeadConfig(), "off": SessionHeadConfig(repeat_window=0),
             "neighbours and ranker": SessionHeadConfig(repeat_window=4, neighbours=3,
                                                        ranker=RankerShape(hidden=6, candidates=5, rules=2))}
    torch.manual_seed(0)
    model = build_model(name, 7, {"dim": 8} | heads[head].to_flat())
    assert model.config.head == heads[head]
    flat = json.loads(json.dumps(model.config.to_dict()))
    assert "head" not in flat and {k: flat[k] for k in FLAT_FIELDS} == heads[head].to_flat()
    again = model_from_config(name, flat)
    assert type(again) is type(model) and again.config == model.config and again.config.to_dict() == flat
    assert again.config.ranker_candidates == (5 if heads[head].ranker else 0)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in again.state_dict().items()} == shapes
    again.load_state_dict(model.state_dict(), strict=True)
    assert (again.repeat is None) == (head == "off") and (again.ranker is None) == (head != "neighbours and ranker")


def test_saved_flat_configs_of_every_age_load(tmp_path: Path) -> None:
    """The flat ``model_config`` of today's artifacts reads back to the same dict; one written before the session
    head existed lacks its keys and loads with no head, as it was trained."""
    from encoders.artifact import save_artifact
    from encoders.models.ranker import RankerShape
    from encoders.models.registry import model_from_config
    from encoders.models.session_head import PRE_HEAD, SessionHeadConfig

    base = {"n_items": 9, "cell": "gru", "dim": 8, "hidden": 8, "query_buckets": 16384, "max_query_tokens": 8,
            "dropout": 0.1}
    ranked = base | {"repeat_window": 50, "neighbours": 4, "text_dim": 0, "id_dropout": 0.1, "ranker_hidden": 32,
                     "ranker_rules": 50, "ranker_candidates": 100}
    model = model_from_config("gru", ranked)
    assert model.config.head == SessionHeadConfig(repeat_window=50, neighbours=4, ranker=RankerShape())
    assert model.config.to_dict() == ranked and model.ranker is not None
    sasrec = {"n_items": 9, "dim": 8, "heads": 2, "layers": 1, "window": 4, "dropout": 0.2, "query_buckets": 16384,
              "max_query_tokens": 8, "repeat_window": 50, "neighbours": 0, "ranker_hidden": 0, "ranker_rules": 0,
              "ranker_candidates": 0}
    assert model_from_config("sasrec", sasrec).config.to_dict() == sasrec
    old = model_from_config("gru", base)
    assert old.config.head == PRE_HEAD and old.repeat is None and old.ranker is None
    assert not any(k.startswith(("repeat.", "ranker.")) for k in old.state_dict())
    folder = save_artifact(old, [f"i{n}" for n in range(1, 10)], {}, "test", tmp_path)
    written = json.loads((folder / "config.json").read_text())
    written["model_type"], written["model_config"] = "recurrent", base  # as the first artifacts were written
    (folder / "config.json").write_text(json.dumps(written))
    assert load_artifact(folder).model.config == old.config  # its weights load strictly


def test_model_options_keep_their_flat_names_and_bad_ones_are_config_errors() -> None:
    """``streamrec train --option repeat_window=10`` and the like name the head's fields flat, as before."""
    from encoders.models.ranker import RankerShape
    from encoders.models.registry import build_model
    from encoders.models.session_head import SessionHeadConfig
    from stream.errors import ConfigError

    model = build_model("gru", 5, {"repeat_window": 10, "neighbours": 2, "ranker_hidden": 4, "hidden": 16})
    assert model.config.head == SessionHeadConfig(repeat_window=10, neighbours=2, ranker=RankerShape(hidden=4))
    assert model.config.hidden == 16
    for options, setting in [({"repeat_windw": 3}, "repeat_windw"), ({"repeat_window": -1}, "repeat_window"),
                             ({"neighbours": "many"}, "neighbours"), ({"ranker_candidates": 10}, "ranker_candidates"),
                             ({"ranker_hidden": 4, "ranker_rules": -2}, "ranker_rules"), ({"head": {}}, "head"),
                             ({"text_dim": 8}, "text_dim")]:
        with pytest.raises(ConfigError) as err:
            build_model("sasrec", 5, options)
        assert err.value.setting == setting, options
