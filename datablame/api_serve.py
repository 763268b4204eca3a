"""One trained run loaded once for many ad-hoc queries: what `datablame serve` calls. Part of the
api layer; `datablame.api` re-exports these."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datablame import __version__
from datablame.config import RunConfig
from datablame.data.corpus import Query
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


def attribute_query(
    served: ServedRun, prompt: str, completion: str | None = None, *, methods: list[str] | None = None,
    k: int | None = None, row_filter: str | None = None,
) -> dict:
    """One ad-hoc query against a `prepare_serving` run: per method the top-k rows as
    {rank, index, row_id, score}; `row_filter` is a metadata expression (`retrieval.filter`
    syntax) rows must pass; with `attribution.retrieval.enabled`, the cascade's stage report."""
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
    if cfg.attribution.retrieval.enabled:
        from datablame.retrieval.candidates import (
            attribute_with_cascade,
            check_cascade_request,
            run_text_indices,
        )

        check_cascade_request(cfg.attribution, methods)
        r = cfg.attribution.retrieval
        indices, info = run_text_indices(ctx, bm25=r.bm25_k is not None, embedding=r.embedding_k is not None,
                                         progress=False)
        done = attribute_with_cascade(ctx, ms, indices=indices, index_info=info, evaluate=False, progress=False)
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
