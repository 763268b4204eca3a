"""The request body of `POST /v1/attributions` and its checks against the run's limits; every
refusal names the field (`BadRequest.field`), so the HTTP layer can answer 4xx with it."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from datablame.config import RunConfig
from datablame.config_serve import ServeConfig

# a value that looks like a filesystem path: nothing in a request is ever opened as one
_PATHLIKE = re.compile(r"^(/|~|\.{1,2}/|[A-Za-z]:\\)|\.\./|\x00")


_BRANCH = re.compile(r"^([A-Z]|(bool|int|str|float|none|list\[.*\])$)")


class BadRequest(Exception):
    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


class CascadeOptions(BaseModel):
    """Stage sizes for this query's cascade (null: the run's `attribution.retrieval` value)."""

    model_config = ConfigDict(extra="forbid")

    embedding_k: int | None = Field(None, ge=1, le=10_000_000, description="rows the MiniLM embedding stage keeps")
    bm25_k: int | None = Field(None, ge=1, le=10_000_000, description="rows the BM25 stage keeps")
    final_k: int | None = Field(None, ge=1, le=10_000_000, description="rows the gradient re-rank keeps (default k)")


class AttributionRequest(BaseModel):
    """One query: the prompt, optionally the completion (else the model generates it), the
    methods (default: the run's attribution.methods), k, and a metadata filter expression."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="the query's prompt")
    completion: str | None = Field(None, description="the behaviour to explain; null: the model's greedy completion")
    methods: list[str] | None = Field(None, description="attribution methods (GET /v1/methods); null: the run's")
    k: int | None = Field(None, ge=1, description="rows per method; null: attribution.top_k (at most serve.max_k)")
    filter: str | None = Field(None, description="metadata filter, e.g. \"kind == 'plant'\"")
    cascade: StrictBool | CascadeOptions | None = Field(
        None, description="run the retrieval cascade (metadata filter -> embedding -> BM25 -> gradient re-rank; "
                          "gradient methods and 'fused' only): true, stage sizes, false; null: the run's "
                          "attribution.retrieval.enabled. The answer's `retrieval` holds its stage table")
    cache: bool = Field(True, description="false: compute afresh (the answer is cached all the same)")
    wait: bool = Field(True, description="wait up to serve.sync_wait_s for the answer before returning the job")


def parse_request(raw: bytes, limits: ServeConfig, known_methods: set[str], default_methods: list[str],
                  default_k: int, cfg: RunConfig | None = None) -> AttributionRequest:
    """The validated request, or BadRequest naming the field. With the run's config, a
    request for the cascade is resolved to its stage sizes and checked as `datablame
    attribute` checks it (gradient methods only, stages keeping at least the rows returned)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(400, "body", f"body: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "body", "body: expected a JSON object with a prompt")
    try:
        req = AttributionRequest.model_validate(data)
    except ValidationError as err:
        # the most specific error; a union's branch tags (`bool`, `CascadeOptions`) are not fields
        e = max(err.errors(), key=lambda x: len(x["loc"]))
        field = ".".join(str(x) for x in e["loc"] if not _BRANCH.match(str(x))) or "body"
        allowed = CascadeOptions.model_fields if field.startswith("cascade.") else AttributionRequest.model_fields
        msg = "unknown field (allowed: " + ", ".join(allowed) + ")" if e["type"] == "extra_forbidden" else e["msg"]
        if field == "cascade":
            msg = "give true, false, null or the stage sizes {embedding_k, bm25_k, final_k}"
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
    req = req.model_copy(update={"methods": list(methods), "k": req.k or min(default_k, limits.max_k)})
    if cfg is not None:
        req = req.model_copy(update={"cascade": _resolve_cascade(req, cfg)})
    return req


def _resolve_cascade(req: AttributionRequest, cfg: RunConfig) -> dict[str, Any] | None:
    """The cascade's stage sizes for this request (None: no cascade), checked."""
    from datablame.api_serve import cascade_settings
    from datablame.retrieval.candidates import FUSION_METHOD, GRADIENT_METHODS

    asked = req.cascade.model_dump() if isinstance(req.cascade, CascadeOptions) else req.cascade
    attribution = cascade_settings(cfg, asked, k=req.k)
    if attribution is None:
        return None
    refused = [m for m in req.methods if m not in GRADIENT_METHODS | {FUSION_METHOD}]
    if refused:
        raise BadRequest(422, "methods", f"methods: the cascade ranks its candidates with gradient methods, and "
                                         f"{', '.join(refused)} {'is' if len(refused) == 1 else 'are'} not one "
                                         f"(use {sorted(GRADIENT_METHODS)} or {FUSION_METHOD!r}, or set cascade: false)")
    r = attribution.retrieval
    need = max(r.final_k, req.k)
    for name in ("embedding_k", "bm25_k"):
        if getattr(r, name) is not None and getattr(r, name) < need:
            raise BadRequest(422, f"cascade.{name}", f"cascade.{name}: {getattr(r, name)} rows, fewer than the {need} "
                                                     "the cascade returns (final_k, k); raise it or lower k")
    return {"embedding_k": r.embedding_k, "bm25_k": r.bm25_k, "final_k": r.final_k}


def request_schema() -> dict[str, Any]:
    """The request's JSON schema with nested models inlined (no `$defs`/`$ref`, which would
    not resolve inside an OpenAPI document)."""
    schema = AttributionRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def cache_request(req: AttributionRequest) -> dict[str, Any]:
    """What changes the answer (the cache key's request part)."""
    return {"prompt": req.prompt, "completion": req.completion, "methods": req.methods, "k": req.k,
            "filter": req.filter, "cascade": req.cascade or None}
