"""The HTTP API's OpenAPI 3.1 document, served at ``/v1/openapi.json``; the records are the JSON Schemas in
schemas/, referred to by their ids."""

from __future__ import annotations

from typing import Any

from stream.config import Settings
from stream.core.requests import MAX_K
from stream.core.schemas import MAX_ID_LEN

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "parameter": {"type": "string"},
                                          "detail": {"type": "string"}}, "required": ["error"]}


def openapi(settings: Settings) -> dict[str, Any]:
    """The document for this worker's settings (the default k, whether a token is needed)."""

    def error(description: str, retry: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"description": description,
                               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        if retry:
            out["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        return out

    def record(ref: str, description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}

    def ident(name: str, where: str) -> dict[str, Any]:
        return {"name": name, "in": where, "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN}}

    k = {"name": "k", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": min(settings.top_k, MAX_K)}}
    common = {"400": error("a bad parameter, named in `parameter`"),
              "503": error("not ready, or rebalancing: ask again after Retry-After", retry=True)}
    if settings.http_token:
        common["401"] = error("a missing or wrong bearer token")
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamrec", "version": "1",
                 "description": "A user's recommendations now and an item's similar items, from any worker."},
        "paths": {
            "/v1/users/{user_id}/recommendations": {"get": {
                "summary": "The user's list now, from the user's current state (no event applied)",
                "parameters": [ident("user_id", "path"), k,
                               {"name": "category", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "only items of this catalog category"},
                               {"name": "exclude", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "comma-separated item ids never to list"}],
                "responses": {"200": record("urn:streamrec:schema:recommendation:1",
                                            'the recommendation record, with "event": null and "source": "request"'),
                              **common}}},
            "/v1/items/{item_id}/similar": {"get": {
                "summary": "The items nearest to an item in the served index",
                "parameters": [ident("item_id", "path"), k],
                "responses": {"200": record("urn:streamrec:schema:similar-items:1", "the nearest items, best first"),
                              "404": error("an unknown item"), **common}}},
            "/healthz": {"get": {"summary": "The process is up (no token needed)",
                                 "responses": {"200": {"description": "up"}}}},
            "/readyz": {"get": {"summary": "Model, index and catalog loaded; partitions assigned and recovered "
                                           "(no token needed)",
                                "responses": {"200": {"description": "ready"},
                                              "503": error("not ready", retry=True)}}},
        },
        "components": {"schemas": {"Error": _ERROR},
                       **({"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
                          if settings.http_token else {})},
        **({"security": [{"bearer": []}]} if settings.http_token else {}),
    }
