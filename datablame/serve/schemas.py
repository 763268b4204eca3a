"""The request body of `POST /v1/attributions` and its checks against the run's limits; every
refusal names the field (`BadRequest.field`), so the HTTP layer can answer 4xx with it."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datablame.config_serve import ServeConfig

# a value that looks like a filesystem path: nothing in a request is ever opened as one
_PATHLIKE = re.compile(r"^(/|~|\.{1,2}/|[A-Za-z]:\\)|\.\./|\x00")


class BadRequest(Exception):
    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


class AttributionRequest(BaseModel):
    """One query: the prompt, optionally the completion (else the model generates it), the
    methods (default: the run's attribution.methods), k, and a metadata filter expression."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="the query's prompt")
    completion: str | None = Field(None, description="the behaviour to explain; null: the model's greedy completion")
    methods: list[str] | None = Field(None, description="attribution methods (GET /v1/methods); null: the run's")
    k: int | None = Field(None, ge=1, description="rows per method; null: attribution.top_k (at most serve.max_k)")
    filter: str | None = Field(None, description="metadata filter, e.g. \"kind == 'plant'\"")
    cache: bool = Field(True, description="false: compute afresh (the answer is cached all the same)")
    wait: bool = Field(True, description="wait up to serve.sync_wait_s for the answer before returning the job")


def parse_request(raw: bytes, limits: ServeConfig, known_methods: set[str], default_methods: list[str],
                  default_k: int) -> AttributionRequest:
    """The validated request, or BadRequest naming the field."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(400, "body", f"body: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "body", "body: expected a JSON object with a prompt")
    try:
        req = AttributionRequest.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(x) for x in e["loc"]) or "body"
        msg = "unknown field (allowed: " + ", ".join(AttributionRequest.model_fields) + ")" \
            if e["type"] == "extra_forbidden" else e["msg"]
        raise BadRequest(422, field, f"{field}: {msg}") from None
    for name in ("prompt", "completion"):
        value = getattr(req, name)
        if value is not None and len(value) > limits.max_prompt_chars:
            raise BadRequest(413, name, f"{name}: {len(value)} characters, more than serve.max_prompt_chars "
                                        f"({limits.max_prompt_chars})")
    if req.k is not None and req.k > limits.max_k:
        raise BadRequest(422, "k", f"k: {req.k} is more than serve.max_k ({limits.max_k})")
    methods = req.methods if req.methods is not None else default_methods
    if not methods:
        raise BadRequest(422, "methods", "methods: give at least one method")
    if len(methods) > limits.max_methods or len(set(methods)) != len(methods):
        raise BadRequest(422, "methods", f"methods: at most {limits.max_methods}, each once")
    for m in methods:
        if _PATHLIKE.search(m):
            raise BadRequest(422, "methods", f"methods: {m[:80]!r} looks like a path; methods are names "
                                             "(GET /v1/methods), nothing is read from disk")
        if m not in known_methods:
            raise BadRequest(422, "methods", f"methods: unknown method {m[:80]!r} (GET /v1/methods lists them)")
    if req.filter is not None and len(req.filter) > 2000:
        raise BadRequest(422, "filter", "filter: longer than 2000 characters")
    return req.model_copy(update={"methods": list(methods), "k": req.k or min(default_k, limits.max_k)})


def cache_request(req: AttributionRequest) -> dict[str, Any]:
    """What changes the answer (the cache key's request part)."""
    return {"prompt": req.prompt, "completion": req.completion, "methods": req.methods, "k": req.k,
            "filter": req.filter}
