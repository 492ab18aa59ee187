"""`streamrec evaluate ARTIFACT --learning on,off`: what learning from the stream adds, offline.

The artifact's test period is walked in time order (encoders/training/streaming_eval.py): with learning
``on`` the live successor table learns from every event before each target and new items become rankable
from their first event; ``off`` is the worker without it (the standard evaluation's figures). The artifact's
own live settings are used (their weight was fitted on its validation slice), or the defaults for an
artifact trained without one.

Writes ``learning.json`` (mode -> slice -> metrics, and ``run``) into the output folder and adds a section
to its ``report.md``. With ``--online`` too, each mode is also replayed through the broker and a worker
(stream/tools/online_eval.py) and ``learning.json`` gains ``online`` (mode -> slice -> metrics) and the
differences in Recall@20 between the two.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from encoders.artifact import load_artifact
from encoders.models.live_neighbours import LiveConfig
from encoders.training.streaming_eval import SLICES, StreamingWalk
from stream.config import Settings
from stream.errors import ConfigError
from stream.tools.report import artifact_sequences

MODES = ("on", "off")
KEYS = ("recall@20", "mrr@20", "ndcg@10")


def learning_modes(spec: str) -> list[str]:
    """The modes of ``--learning`` (comma-separated, each of on and off)."""
    modes = [m.strip() for m in spec.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise ConfigError("learning", f"expected a comma-separated list of {', '.join(MODES)}, got {spec!r}")
    return list(dict.fromkeys(modes))


def evaluate_learning(path: Path, data_dir: Path, out: Path, modes: list[str],
                      max_events: int = 20_000) -> dict[str, Any]:
    """Score the artifact's test period with learning on and/or off; writes learning.json and a report
    section, and returns what it wrote."""
    artifact = load_artifact(path)
    sequences, cutoff, query_vectors = artifact_sequences(artifact, data_dir)
    config = artifact.live or LiveConfig()
    result: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    walk = StreamingWalk(artifact.model, sequences, cutoff, float("inf"), max_events, query_vectors)
    for mode in modes:
        started = time.perf_counter()
        measured = walk.metrics(config if mode == "on" else None)
        seconds[mode] = round(time.perf_counter() - started, 1)
        result[mode] = {name: {k: measured[name].get(k, 0.0) for k in KEYS} | {"targets": measured[name]["events"]}
                        for name in SLICES}
    result["run"] = {"artifact": artifact.version, "dataset": artifact.dataset, "cutoff_ts": cutoff,
                     "live": vars(config) | {"from_artifact": artifact.live is not None}, "seconds": seconds}
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning.json").write_text(json.dumps(result, indent=2) + "\n")
    report = out / "report.md"
    before = report.read_text().rstrip() + "\n\n" if report.exists() else ""
    report.write_text(before + _markdown(result, modes))
    return result


def _markdown(result: dict[str, Any], modes: list[str]) -> str:
    run = result["run"]
    lines = [f"## Learning from the stream: {run['artifact']}", "",
             "The test period walked in time order; `on`: the live successor table learns from every event "
             "before each target and new items (first seen after the training cutoff) are rankable from their "
             "first event; `off`: the model as trained. Full ranking.", "",
             "| learning | slice | targets | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 3) + "|"]
    for mode in modes:
        for name in SLICES:
            row = result[mode][name]
            lines.append(f"| {mode} | {name} | {row['targets']} | "
                         + " | ".join(f"{row[k]:.4f}" for k in KEYS) + " |")
    return "\n".join(lines) + "\n"


def add_online(settings: Settings, path: Path, out: Path, modes: list[str], rate: float,
               max_events: int = 20_000) -> dict[str, Any]:
    """Replay the period online in each mode; adds ``online`` and ``online_minus_offline_recall@20`` (per mode and
    slice) to the learning.json in ``out`` and returns it."""
    from stream.tools.online_eval import evaluate_online

    file = out / "learning.json"
    result: dict[str, Any] = json.loads(file.read_text())
    result["online"] = {}
    result["online_minus_offline_recall@20"] = {}
    for mode in modes:
        summary = evaluate_online(settings, path, rate=rate, max_events=max_events, learning=mode == "on")
        result["online"][mode] = summary["slices"] | {"unanswered": summary["online"]["all"].get("unanswered", 0),
                                                      "seconds": summary["seconds"]}
        result["online_minus_offline_recall@20"][mode] = {
            name: round(summary["slices"][name]["recall@20"] - result[mode][name]["recall@20"], 4) for name in SLICES}
    file.write_text(json.dumps(result, indent=2) + "\n")
    report = out / "report.md"
    lines = ["", "Online (`--online`: the same period through the broker and a worker):", "",
             "| learning | slice | targets | online R@20 | offline R@20 | online MRR@20 | offline MRR@20 |",
             "|---|---|---|---|---|---|---|"]
    for mode in modes:
        for name in SLICES:
            on, off = result["online"][mode][name], result[mode][name]
            lines.append(f"| {mode} | {name} | {on['targets']} | {on['recall@20']:.4f} | {off['recall@20']:.4f} | "
                         f"{on['mrr@20']:.4f} | {off['mrr@20']:.4f} |")
    report.write_text(report.read_text().rstrip() + "\n" + "\n".join(lines) + "\n")
    return result
