"""The shared real datasets as time-ordered click / search / purchase events.

How each dataset maps to events (also in docs/models.md):

* ``movielens`` (movielens_latest_small): a rating >= 4.0 is a purchase (the user took the movie), a lower
  rating is a click (viewed, not taken), a free-text tag is a search whose query is the tag. User = userId.
* ``yoochoose`` (yoochoose_1pct): clicks are clicks, buys are purchases (with quantity and price when
  known). There are no user ids, so user = session id.
* ``diginetica`` (diginetica_sample): item views are clicks, purchases inside the sampled view sessions are
  purchases. User = session id (most user ids are anonymous); ts = eventdate + timeframe.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
from collections.abc import Iterator
from pathlib import Path

from encoders.models.inputs import EventType
from encoders.training.events import DatasetEvent
from stream.core.schemas import ItemRecord
from stream.errors import ConfigError

DATASETS = ("movielens", "yoochoose", "diginetica")
_FOLDERS = {"movielens": "movielens_latest_small", "yoochoose": "yoochoose_1pct",
            "diginetica": "diginetica_sample"}
_ORDER = {"search": 0, "click": 1, "purchase": 2}  # tie-break at equal ts: look, then buy


def dataset_dir(name: str, data_dir: Path) -> Path:
    """The folder of one dataset, checked to exist."""
    if name not in _FOLDERS:
        raise ConfigError("dataset", f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    folder = data_dir / _FOLDERS[name]
    if not folder.is_dir():
        raise ConfigError("data_dir", f"{folder} not found (data_dir={data_dir})")
    return folder


def load_events(name: str, data_dir: Path) -> list[DatasetEvent]:
    """All events of a dataset, sorted by time (stable: file order within equal timestamps)."""
    folder = dataset_dir(name, data_dir)
    reader = {"movielens": _movielens, "yoochoose": _yoochoose, "diginetica": _diginetica}[name]
    events = list(reader(folder))
    events.sort(key=lambda e: (e.ts, _ORDER[e.type]))
    return events


def item_titles(name: str, data_dir: Path) -> dict[str, str]:
    """Human-readable item names where a dataset has them (movielens titles), else empty."""
    if name != "movielens":
        return {}
    with open(dataset_dir(name, data_dir) / "movies.csv", newline="", encoding="utf-8") as f:
        return {row["movieId"]: row["title"] for row in csv.DictReader(f)}


def load_catalog(name: str, data_dir: Path) -> list[ItemRecord]:
    """A dataset's items as catalog records: movielens titles with their first genre as category;
    yoochoose and diginetica items have no titles, only their category where the data gives one."""
    folder = dataset_dir(name, data_dir)
    if name == "movielens":
        with open(folder / "movies.csv", newline="", encoding="utf-8") as f:
            return [ItemRecord(row["movieId"], title=row["title"], category=row["genres"].split("|")[0])
                    for row in csv.DictReader(f)]
    if name == "diginetica":
        with open(folder / "product-categories.csv", newline="", encoding="utf-8") as f:
            return [ItemRecord(row["itemId"], category=row["categoryId"]) for row in csv.DictReader(f, delimiter=";")]
    items: dict[str, str | None] = {}
    with gzip.open(folder / "clicks.csv.gz", "rt", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            category = row.get("Category")
            items[row["Item_ID"]] = category if category and category != "0" else items.get(row["Item_ID"])
    return [ItemRecord(item, category=category) for item, category in items.items()]


def item_texts(name: str, data_dir: Path) -> dict[str, str]:
    """The text the item tower encodes per item (movielens: "title. genre, genre"), else empty."""
    if name != "movielens":
        return {}
    out = {}
    with open(dataset_dir(name, data_dir) / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            genres = "" if row["genres"] == "(no genres listed)" else ". " + row["genres"].replace("|", ", ")
            out[row["movieId"]] = row["title"] + genres
    return out


def _movielens(folder: Path) -> Iterator[DatasetEvent]:
    with open(folder / "ratings.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            kind: EventType = "purchase" if float(row["rating"]) >= 4.0 else "click"
            yield DatasetEvent(kind, row["userId"], float(row["timestamp"]), item_id=row["movieId"])
    with open(folder / "tags.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["tag"].strip():
                yield DatasetEvent("search", row["userId"], float(row["timestamp"]), query=row["tag"].strip(),
                                   target=row["movieId"])


def _yoochoose(folder: Path) -> Iterator[DatasetEvent]:
    with gzip.open(folder / "clicks.csv.gz", "rt", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield DatasetEvent("click", row["Session_ID"], float(row["Timestamp"]), item_id=row["Item_ID"])
    with open(folder / "buys.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            quantity = int(row["Quantity"]) or None  # 0 means unknown in the original data
            price = float(row["Price"]) or None
            yield DatasetEvent("purchase", row["Session_ID"], float(row["Timestamp"]), item_id=row["Item_ID"],
                               quantity=quantity, price=price)


def _day_start(date: str) -> float:
    return dt.datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()


def _diginetica(folder: Path) -> Iterator[DatasetEvent]:
    sessions: set[str] = set()
    with open(folder / "train-item-views_sample.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter=";"):
            sessions.add(row["session_id"])
            ts = _day_start(row["eventdate"]) + int(row["timeframe"]) / 1000.0
            yield DatasetEvent("click", "s" + row["session_id"], ts, item_id=row["item_id"])
    with open(folder / "train-purchases.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter=";"):
            if row["sessionId"] in sessions:
                ts = _day_start(row["eventdate"]) + int(row["timeframe"]) / 1000.0
                yield DatasetEvent("purchase", "s" + row["sessionId"], ts, item_id=row["itemId"])
