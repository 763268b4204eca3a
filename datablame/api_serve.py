"""One trained run loaded once for many ad-hoc queries: what `datablame serve` calls. Part of the
api layer; `datablame.api` re-exports these."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datablame import __version__
from datablame.config import AttributionConfig, RunConfig
from datablame.data.corpus import Query
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.inputs import prepare_inputs
from datablame.methods import get_method, run_method


@dataclass
class ServedRun:
    """A trained run loaded once for many ad-hoc queries (`datablame serve`): its config, its
    rows-only context (model, corpus, store) and the identity a cached answer depends on."""

    cfg: RunConfig
    inputs: AttributionContext
    identity: dict


def prepare_serving(cfg: RunConfig) -> ServedRun:
    """Load the run's model, corpus and feature store (when built) once; `attribute_query` then
    ranks rows for one query at a time, reusing them and writing nothing to the results."""
    from datablame.api import check_options  # the api module imports this one at its top
    from datablame.report.history import store_provenance

    check_options(cfg)
    inputs, _ = prepare_inputs(cfg, queries=False)
    identity = {"version": __version__, "model": inputs.fingerprint, "data": inputs.corpus.fingerprint(),
                "store": store_provenance(inputs.store) if inputs.store is not None else None,
                "attribution": cfg.attribution.model_dump(mode="json", exclude={"queries", "queries_file", "top_k"})}
    return ServedRun(cfg, inputs, identity)


def cascade_settings(cfg: RunConfig, cascade: bool | dict | None, *, k: int | None = None,
                     row_filter: str | None = None) -> AttributionConfig | None:
    """The attribution settings one query's cascade runs with (None: no cascade). `cascade`
    as in `attribute_query`; the cascade returns `final_k` rows (default: k); `row_filter`
    joins `retrieval.filter` (both must hold)."""
    use = cfg.attribution.retrieval.enabled if cascade is None else bool(cascade)
    if not use:
        return None
    r = cfg.attribution.retrieval
    update: dict = {"enabled": True}
    if isinstance(cascade, dict):
        unknown = set(cascade) - {"embedding_k", "bm25_k", "final_k"}
        if unknown:
            raise DatablameError(f"cascade: unknown setting(s) {sorted(unknown)}",
                                 "give embedding_k, bm25_k and/or final_k")
        update.update({name: v for name, v in cascade.items() if v is not None})
    if row_filter:
        update["filter"] = row_filter if not r.filter else f"({r.filter}) and ({row_filter})"
    top_k = k or cfg.attribution.top_k
    if update.get("final_k") is None and r.final_k is None:
        update["final_k"] = top_k
    return cfg.attribution.model_copy(update={"retrieval": r.model_copy(update=update), "top_k": top_k})


def attribute_query(
    served: ServedRun, prompt: str, completion: str | None = None, *, methods: list[str] | None = None,
    k: int | None = None, row_filter: str | None = None, cascade: bool | dict | None = None,
) -> dict:
    """One ad-hoc query against a `prepare_serving` run: per method the top-k rows as
    {rank, index, row_id, score}; `row_filter` is a metadata expression (`retrieval.filter`
    syntax) rows must pass. `cascade`: None runs the retrieval cascade when
    `attribution.retrieval.enabled`; True runs it with the run's `attribution.retrieval`
    settings, a dict overrides some of them ({embedding_k, bm25_k, final_k}), False does not.
    With the cascade, the request's filter joins the cascade's metadata stage, and the result
    carries the cascade's stage report (`attribute_with_cascade`, as `datablame attribute`)."""
    import dataclasses

    from datablame.models.queries import prepare_queries
    from datablame.report.results import top_k
    from datablame.retrieval.filter import compile_filter

    cfg, base = served.cfg, served.inputs
    methods = methods or cfg.attribution.method_names()
    ms = [get_method(n, **cfg.attribution.options.get(n, {})) for n in methods]
    keep = compile_filter(row_filter).mask(base.corpus) if row_filter else None
    prepared, q_enc = prepare_queries(base.model, base.tokenizer, [Query(prompt=prompt, completion=completion)],
                                      max_length=cfg.model.max_length, max_new_tokens=cfg.attribution.max_new_tokens)
    ctx = dataclasses.replace(base, queries=prepared, query_rows=q_enc, generated=[completion is None],
                              shared=base.shared.for_new_queries())
    retrieval = None
    attribution = cascade_settings(cfg, cascade, k=k, row_filter=row_filter)
    if attribution is not None:
        from datablame.retrieval.candidates import (
            attribute_with_cascade,
            check_cascade_request,
            run_text_indices,
        )

        check_cascade_request(attribution, methods)
        ctx = dataclasses.replace(ctx, attribution=attribution)
        r = attribution.retrieval
        indices, info = run_text_indices(ctx, bm25=r.bm25_k is not None, embedding=r.embedding_k is not None,
                                         progress=False)
        # evaluate=None: each stage's recall when the feature store makes it cheap, as `datablame attribute`
        done = attribute_with_cascade(ctx, ms, indices=indices, index_info=info, evaluate=None, progress=False)
        scores, retrieval = done.scores, done.report
    else:
        scores = {m.name: run_method(ctx, m).scores for m in ms}
    if base.shared.row_grads is None and ctx.shared.row_grads is not None:
        base.shared.row_grads = ctx.shared.row_grads  # the next query reuses the rows' gradients
    out = {}
    for name, mat in scores.items():
        row = np.where(keep, mat[0], -np.inf) if keep is not None else mat[0]
        picked = [int(j) for j in top_k(row, k or cfg.attribution.top_k) if np.isfinite(row[j])]
        out[name] = [{"rank": i + 1, "index": j, "row_id": base.corpus[j].row_id, "score": float(row[j])}
                     for i, j in enumerate(picked)]
    return {"prompt": prompt, "completion": prepared[0].completion or "", "generated": completion is None,
            "rankings": out, "retrieval": retrieval}
