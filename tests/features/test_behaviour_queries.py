"""Behaviour-level queries: a query measured over a set of completions (mean loss of the
behaviour, minus the mean loss of a contrast set). Every gradient and influence method takes
it through one measurement function, so its scores are exactly the same combination of the
scores of the member strings asked one by one (they are linear in the query's gradient)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from datablame.config import QueryConfig
from datablame.data.queries import match_template, to_query
from datablame.errors import DatablameError
from datablame.methods import run_method
from datablame.models.queries import behaviour_measure, context_limit, prepare_queries


def _with_queries(ctx, queries):
    """The same run asked other queries (nothing query-dependent carried over)."""
    prepared, enc = prepare_queries(ctx.model, ctx.tokenizer, queries, max_length=ctx.model_cfg.max_length,
                                    max_new_tokens=8)
    measure = behaviour_measure(ctx.tokenizer, prepared, limit=context_limit(ctx.model, ctx.model_cfg.max_length))
    return dataclasses.replace(ctx, queries=prepared, query_rows=enc, query_measure=measure,
                               generated=[False] * len(prepared), shared=ctx.shared.for_new_queries())


@pytest.fixture(scope="module")
def behaviour(planted_run):
    """Two planted queries, each with two more completions and one contrast, and the single-
    string contexts of every member."""
    _, make_inputs, _ = planted_run
    ctx = make_inputs()
    base = ctx.queries[:2]
    other = [q.completion for q in ctx.queries[1:3]]  # other facts' answers: a contrast that differs
    queries = [dataclasses.replace(q, behaviour=(q.completion + " indeed", " It is" + q.completion),
                                   contrast=(other[i],)) for i, q in enumerate(base)]
    return ctx, queries


@pytest.mark.parametrize("method, options", [("grad_dot", {}), ("ekfac", {}), ("tracin", {"checkpoints": 2})])
def test_scores_are_the_measured_combination_of_member_scores(behaviour, method, options):
    ctx, queries = behaviour
    measured = run_method(_with_queries(ctx, queries), method, options).scores
    singles = [q.completion for q in queries], [q.behaviour[0] for q in queries], [q.behaviour[1] for q in queries]
    contrast = [q.contrast[0] for q in queries]

    def scores_for(completions):
        asked = [dataclasses.replace(q, completion=c, behaviour=(), contrast=()) for q, c in zip(queries, completions, strict=True)]
        one = _with_queries(ctx, asked)
        assert one.query_measure is None  # single strings: measured as always
        return run_method(one, method, options).scores

    expected = np.mean([scores_for(c) for c in singles], axis=0) - scores_for(contrast)
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    without_contrast = run_method(_with_queries(ctx, [dataclasses.replace(q, contrast=()) for q in queries]),
                                  method, options).scores
    assert not np.allclose(measured, without_contrast)  # the contrast really enters


def test_methods_that_cannot_measure_say_so(behaviour, caplog):
    ctx, queries = behaviour
    asked = _with_queries(ctx, queries)
    with pytest.raises(DatablameError, match="kronfluence cannot measure behaviour-level queries") as err:
        run_method(asked, "kronfluence")
    assert "grad_cosine" in err.value.fix
    with caplog.at_level(logging.WARNING, logger="datablame"):
        run_method(asked, "bm25")
    assert "bm25 (lexical) reads each query's prompt and first completion only" in caplog.text


def test_measure_weights_and_bad_members(behaviour):
    ctx, queries = behaviour
    asked = _with_queries(ctx, queries)
    w = asked.query_measure.weights.numpy()
    assert w.shape == (2, 8)  # per query: completion + 2 behaviour + 1 contrast
    np.testing.assert_allclose(w[0, :4], [1 / 3, 1 / 3, 1 / 3, -1.0])
    np.testing.assert_allclose(w.sum(axis=1), [0.0, 0.0], atol=1e-12)
    assert (w[0, 4:] == 0).all() and (w[1, :4] == 0).all()
    long = [dataclasses.replace(queries[0], behaviour=(" word" * 500,))]
    with pytest.raises(DatablameError, match="behaviour completion .* longer than the context"):
        _with_queries(ctx, long)


def test_config_renders_behaviour_like_the_rows():
    q = to_query(QueryConfig(input="What is the capital of Vorland?", output="Brisa",
                             behaviour=["It is Brisa"], contrast=["Lumin"]), "q")
    assert q.completion == " Brisa" and q.behaviour == (" It is Brisa",) and q.contrast == (" Lumin",)
    written = to_query(QueryConfig(prompt="Question: x?\nAnswer:", completion="a", behaviour=["b"]), "q")
    (spaced, _), = match_template([(written, "q")])
    assert (spaced.completion, spaced.behaviour) == (" a", (" b",))
    with pytest.raises(ValueError, match="must not be empty"):
        QueryConfig(prompt="p", behaviour=["  "])
    assert not to_query(QueryConfig(prompt="p", completion="c"), "q").is_behaviour


def test_attribute_writes_what_a_query_was_measured_over(planted_run):
    """Through the API: a configured behaviour-level query is measured by the gradient method,
    read as its first completion by BM25, and results.json says what it was measured over."""
    from datablame import api

    cfg, make_inputs, _ = planted_run
    q = make_inputs().queries[0]
    asked = QueryConfig(prompt=q.prompt, completion=q.completion, query_id="claim",
                        behaviour=[q.completion + " indeed"], contrast=[" nobody"])
    cfg = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(
        update={"queries": [asked], "methods": ["grad_cosine", "bm25"]})})
    result, paths = api.attribute(cfg, progress=False)
    (got,) = result.queries
    assert got.measured_over == {"behaviour": [q.completion + " indeed"], "contrast": [" nobody"]}
    assert set(got.rankings) == {"grad_cosine", "bm25"}
    assert '"measured_over"' in paths["json"].read_text()
