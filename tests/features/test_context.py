"""The attribution context: one feature identity behind the store check, the curvature
factors' identity and the checkpoint-feature keys; typed shared features computed once; no
free-form cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from influence_inputs import random_rows, tiny_inputs

from datablame.features import gradients
from datablame.features.checkpoints import feature_key
from datablame.features.context import AttributionContext, FeatureIdentity, SharedFeatures
from datablame.features.preconditioner import FACTOR_FORMAT, curvature_identity
from datablame.methods import run_method


@pytest.fixture
def ctx(tiny_llama) -> AttributionContext:
    return tiny_inputs(tiny_llama, random_rows(6, seed=5), random_rows(2, seed=6), k=8)


@pytest.fixture
def featurize_calls(monkeypatch) -> list[int]:
    """The number of rows of every featurize call, in order."""
    calls: list[int] = []
    real = gradients.GradientFeaturizer.featurize

    def counting(self, encoded, *a, **k):
        calls.append(len(encoded))
        return real(self, encoded, *a, **k)

    monkeypatch.setattr(gradients.GradientFeaturizer, "featurize", counting)
    return calls


def test_identity_views_share_one_source(ctx):
    ident = ctx.identity()
    assert isinstance(ident, FeatureIdentity) and ident.model == "tiny-test-model" and ident.rows == 6
    store = ident.store()
    assert set(store) == {"model", "data", "modules", "projection", "max_length", "loss_on"}
    curv = curvature_identity(ctx, "ekfac", "empirical", None, 0)
    assert {k: curv[k] for k in store} == store  # the factors' identity extends the store's
    assert curv["format"] == FACTOR_FORMAT and curv["kind"] == "ekfac" and curv["fisher"] == "empirical"
    # checkpoint feature keys: the same identity at other weights
    key = feature_key(ctx, "other-weights")
    assert key == ident.with_model("other-weights").feature_key() and len(key) == 16
    assert key != feature_key(ctx, "tiny-test-model")
    # what the identity covers changes every view
    other = dataclasses.replace(ctx, attribution=ctx.attribution.model_copy(
        update={"projection": ctx.attribution.projection.model_copy(update={"k_in": 4, "k_out": 4})}),
        shared=SharedFeatures())
    assert other.identity().store() != store and feature_key(other, "other-weights") != key


def test_shared_features_are_computed_once_and_typed(ctx, featurize_calls):
    calls = featurize_calls
    dot = run_method(ctx, "grad_dot")
    assert ctx.shared.grads is not None and calls == [6, 2]  # rows, then queries
    cos = run_method(ctx, "grad_cosine")
    assert calls == [6, 2], "the second gradient method reused the shared features"
    assert ctx.grads() is ctx.shared.grads
    norms = np.linalg.norm(ctx.grads().queries.double().numpy(), axis=1)[:, None] * \
        np.linalg.norm(ctx.grads().rows.double().numpy(), axis=1)[None, :]
    np.testing.assert_allclose(cos.scores, dot.scores / norms, rtol=1e-6)
    # a fresh context shares nothing but keeps the run's model, store and identity
    fresh = ctx.fresh()
    assert fresh.shared.grads is None and fresh.model_info == ctx.model_info and fresh.store is ctx.store
    run_method(fresh, "grad_dot")
    assert calls == [6, 2, 6, 2]
    # of_model keeps only model-level parts (the featurizer), never row features
    part = ctx.shared.of_model()
    assert part.featurizer is ctx.shared.featurizer and part.grads is None


def test_the_context_has_no_free_form_cache():
    fields = {f.name for f in dataclasses.fields(AttributionContext)}
    assert "cache" not in fields
    for f in dataclasses.fields(SharedFeatures):  # each shared field has a declared type
        assert f.type and f.type != "Any", f.name


def test_run_method_checks_the_shape(ctx):
    from datablame.errors import DatablameError
    from datablame.methods import REGISTRY
    from datablame.methods.base import Method

    class Transposed(Method):
        name, family, unit, cost = "transposed_for_test", "baseline", "-", "-"

        def score(self, c):
            return np.zeros((len(c.corpus), len(c.queries)))

    REGISTRY[Transposed.name] = Transposed
    try:
        with pytest.raises(DatablameError, match="transposed_for_test.*shape"):
            run_method(ctx, Transposed.name)
    finally:
        REGISTRY.pop(Transposed.name)


def test_new_queries_reuse_the_rows_features_and_score_the_same(ctx, featurize_calls):
    """`for_new_queries` (datablame serve): a second query on the same rows featurizes only the
    query, and its scores equal those of a context built from scratch."""
    calls = featurize_calls
    run_method(ctx, "grad_cosine")
    assert calls == [6, 2] and ctx.shared.row_grads is not None
    other = random_rows(1, seed=11)
    again = dataclasses.replace(ctx, query_rows=other, queries=ctx.queries[:1],
                                shared=ctx.shared.for_new_queries())
    assert again.shared.grads is None and again.shared.row_grads is ctx.shared.row_grads
    got = run_method(again, "grad_cosine").scores
    assert calls == [6, 2, 1], "only the new query was featurized"
    fresh = dataclasses.replace(ctx, query_rows=other, queries=ctx.queries[:1], shared=SharedFeatures())
    np.testing.assert_allclose(got, run_method(fresh, "grad_cosine").scores, rtol=1e-12)
    # a view over other rows (the cascade's candidates) never carries them
    assert ctx.shared.of_model().row_grads is None
