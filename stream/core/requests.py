"""The HTTP API's requests as the data path takes them: parameters parsed and checked here, once.

The handlers (stream/kafka/http_api.py) hand in the path's ids and the query string's values as text; what
comes back is a typed request, or :class:`InvalidRequest` naming the bad parameter (answered 400). Ids obey
the limits of the event decoder (stream/core/schemas.py), so any id an event can carry can be asked about.
Unknown parameters are ignored, as unknown fields of an event are (a page's cache-buster, say).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from stream.core.schemas import MAX_ID_LEN
from stream.errors import InvalidRequest

MAX_K = 100  # items a request may ask for
MAX_EXCLUDED = 1000  # item ids one request may exclude


@dataclass(frozen=True, slots=True)
class ListRequest:
    """``GET /v1/users/{user_id}/recommendations``: the user's list now, with request-time filters."""

    user_id: str
    k: int
    category: str | None = None  # only items of this catalog category
    exclude: frozenset[str] = frozenset()  # never these items


@dataclass(frozen=True, slots=True)
class SimilarRequest:
    """``GET /v1/items/{item_id}/similar``: the items nearest to one item."""

    item_id: str
    k: int


def parse_list_request(user_id: str, query: Mapping[str, str], categories: Collection[str],
                       default_k: int) -> ListRequest:
    """Check a list request's parameters; ``categories`` are the catalog's known ones."""
    category = query.get("category")
    if category is not None and category not in categories:
        raise InvalidRequest("category", "not a category of the catalog")
    exclude: frozenset[str] = frozenset()
    raw = query.get("exclude")
    if raw:
        ids = [part.strip() for part in raw.split(",") if part.strip()]
        if len(ids) > MAX_EXCLUDED:
            raise InvalidRequest("exclude", f"at most {MAX_EXCLUDED} item ids")
        exclude = frozenset(identifier("exclude", item) for item in ids)
    return ListRequest(identifier("user_id", user_id), parse_k(query.get("k"), default_k), category, exclude)


def parse_similar_request(item_id: str, query: Mapping[str, str], default_k: int) -> SimilarRequest:
    """Check a similar-items request's parameters."""
    return SimilarRequest(identifier("item_id", item_id), parse_k(query.get("k"), default_k))


def parse_k(raw: str | None, default: int) -> int:
    """``k``: a decimal integer in 1..MAX_K (absent: ``default``, capped to MAX_K)."""
    if raw is None:
        return min(default, MAX_K)
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 3:  # no signs, no "1e2", no 10**4300 parse
        raise InvalidRequest("k", f"must be an integer in 1..{MAX_K}")
    k = int(text)
    if not 1 <= k <= MAX_K:
        raise InvalidRequest("k", f"must be an integer in 1..{MAX_K}")
    return k


def identifier(name: str, value: str) -> str:
    """A user or item id as the event decoder accepts it: 1..MAX_ID_LEN printable characters."""
    if not value or len(value) > MAX_ID_LEN or not value.isprintable():
        raise InvalidRequest(name, f"must be 1..{MAX_ID_LEN} printable characters")
    return value

