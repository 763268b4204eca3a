"""Typed method options: every method declares them (type, default, description), defaults are
the old constructor defaults, and a bad option names the method and the option."""

from __future__ import annotations

import pytest

from datablame.errors import DatablameError
from datablame.methods import REGISTRY, describe_all, get_method, method_options
from datablame.methods.base import FAMILIES, check_options_table

# the keyword defaults of each method's constructor before options were typed (copied by hand)
OLD_DEFAULTS = {
    "activation_gradient": dict(layers="all", pooling="mean", span="answer", aggregate="mean", top_k=2,
                                layer_weights=None, reference="grad_cosine"),
    "activation_similarity": dict(layer=None, pooling="mean", span="answer", center=False, clusters=5,
                                  cluster_top=50, cluster_terms=8),
    "bm25": dict(k1=1.5, b=0.75),
    "causal_patching": dict(top_p=25.0, mode="exact", direction="old_to_new", ig_steps=0, patch_batch=256,
                            old="base", new="model", layers="all", pooling="mean", span="answer", aggregate="mean",
                            top_k=2, layer_weights=None, reference="grad_cosine"),
    "datainf": dict(lambda_scale=0.1, query_chunk=64),
    "datamodels": dict(regression="ridge", alpha=None, holdout=None, min_subsets=3),
    "delta_h": dict(old="base", new="model", layers="all", pooling="mean", span="answer", aggregate="mean",
                    top_k=2, layer_weights=None, reference="grad_cosine"),
    "delta_h_grad": dict(ig_steps=0, old="base", new="model", layers="all", pooling="mean", span="answer",
                         aggregate="mean", top_k=2, layer_weights=None, reference="grad_cosine"),
    "embedding_cosine": dict(model=None, batch_size=64),
    "fused": dict(methods=["bm25", "embedding_cosine", "grad_cosine"], weights=None, c=60, evidence_top=10, combine="rrf"),
    "grad_cosine": {},
    "grad_dot": {},
    "grad_tokenwise": dict(reduce="max", topk=4, positions="nonzero"),
    "hessian_influence": dict(pattern=None, layers=None, solver="auto", damping=None, damping_scale=0.1,
                              max_params=200_000, explicit_max_params=4096, cg_tol=1e-6, cg_max_iter=100,
                              batch_size=None, seed=0),
    "kronfluence": dict(strategy="ekfac", damping=None, query_gradient_rank=None, empirical_fisher=True,
                        batch_size=None, seed=0),
    "less": dict(checkpoints="all", weighting="lr"),
    "llm_judge": dict(backend="local", model=None, candidates=10, candidates_from="grad_cosine", max_new_tokens=6,
                      max_chars=1200, backend_options=None, cache=None),
    "random": dict(seed=0),
    "tracin": dict(checkpoints="all", weighting="lr"),
    "trak": dict(checkpoints="all", models=None, output="margin", damping=0.01, proj_dim=None, seed=0),
}
for _name in ("ekfac", "kfac", "diag_influence"):
    OLD_DEFAULTS[_name] = dict(damping=None, damping_scale=0.1, fisher="empirical", fit_rows=None, seed=0,
                               reuse=True, normalize=False)


def test_every_method_is_covered_and_its_defaults_are_the_old_ones():
    assert set(OLD_DEFAULTS) == set(REGISTRY)
    for name, old in OLD_DEFAULTS.items():
        got = method_options(name).model_dump()
        assert got == old, name
        assert all(type(got[k]) is type(v) for k, v in old.items()), name  # 25.0 stays a float, 0 an int


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_defaults_construct(name):
    m = get_method(name)
    assert m.options == REGISTRY[name].Options()
    assert m.family in FAMILIES


def test_constructed_attributes_are_the_old_ones():
    e = get_method("ekfac")
    assert (e.damping, e.damping_scale, e.fisher, e.fit_rows, e.seed, e.reuse, e.normalize) == (
        None, 0.1, "empirical", None, 0, True, False)
    t = get_method("trak")
    assert (t.checkpoints, t.models, t.output, t.damping, t.proj_dim, t.seed) == ("all", None, "margin", 0.01, None, 0)
    c = get_method("causal_patching")
    assert (c.top_p, c.mode, c.direction, c.ig_steps, c.patch_batch, c.old, c.new) == (
        25.0, "exact", "old_to_new", 0, 256, "base", "model")
    assert (c.aggregation.how, c.aggregation.top_k, c.aggregation.layer_weights, c.aggregation.reference) == (
        "mean", 2, None, "grad_cosine")
    a = get_method("activation_similarity")
    assert (a.layer, a.n_clusters, a.cluster_top, a.cluster_terms, a.center) == (None, 5, 50, 8, False)
    j = get_method("llm_judge")
    assert (j.candidates, j.max_new_tokens, j.max_chars, j.backend_options) == (10, 6, 1200, {})
    d = get_method("datamodels")
    assert (d.regression, d.alpha, d.holdout, d.min_subsets) == ("ridge", None, [], 3)


def test_given_options_reach_the_method():
    m = get_method("ekfac", {"damping": 1e-3, "fisher": "true"}, fit_rows=30)
    assert (m.damping, m.fisher, m.fit_rows) == (1e-3, "true", 30)
    assert get_method("bm25", k1=1).k1 == 1.0 and isinstance(get_method("bm25", k1=1).k1, float)
    assert get_method("tracin", checkpoints=[3, 6]).checkpoints == [3, 6]
    assert get_method("datamodels", holdout=("a", "b")).holdout == ["a", "b"]


@pytest.mark.parametrize(("name", "options", "option"), [
    ("ekfac", {"dampin": 1e-3}, "dampin"),
    ("trak", {"proj": 8}, "proj"),
    ("grad_dot", {"damping": 1.0}, "damping"),
    ("causal_patching", {"topp": 10}, "topp"),
])
def test_unknown_option_names_method_and_option(name, options, option):
    with pytest.raises(DatablameError) as err:
        get_method(name, **options)
    assert f"attribution.options.{name}.{option}: unknown option of method '{name}'" in err.value.problem
    assert "datablame methods" in err.value.fix
    known = ", ".join(REGISTRY[name].Options.model_fields) or "none"
    assert f"its options: {known}" in err.value.problem


@pytest.mark.parametrize(("name", "options", "option"), [
    ("ekfac", {"damping": "x"}, "damping"),
    ("ekfac", {"normalize": "yes"}, "normalize"),
    ("tracin", {"checkpoints": "3"}, "checkpoints"),
    ("trak", {"proj_dim": [8]}, "proj_dim"),
    ("activation_gradient", {"top_k": "two"}, "top_k"),
    ("llm_judge", {"candidates": "many"}, "candidates"),
])
def test_wrong_type_names_method_and_option(name, options, option):
    with pytest.raises(DatablameError) as err:
        method_options(name, options)
    assert err.value.problem.startswith(f"attribution.options.{name}.{option}: ")
    assert repr(options[option]) in err.value.problem  # what was given


@pytest.mark.parametrize(("name", "options", "words"), [
    ("kfac", {"damping": -1.0}, "greater than or equal to 0"),
    ("ekfac", {"fit_rows": 0}, "fit_rows"),
    ("trak", {"output": "loss"}, "'margin' or 'logprob'"),
    ("causal_patching", {"top_p": 101}, "less than or equal to 100"),
    ("delta_h", {"layer_weights": [-1, 2]}, "not convex"),
    ("llm_judge", {"backend": "nope"}, "unknown judge backend 'nope'"),
])
def test_constraints_are_checked_without_building(name, options, words):
    with pytest.raises(DatablameError, match=name) as err:
        method_options(name, options)
    assert words in err.value.problem


def test_options_table_names_an_unknown_method():
    check_options_table({"ekfac": {"damping": 0.1}, "grad_cosine": {}})
    with pytest.raises(DatablameError, match=r"attribution.options.ekfca: unknown method 'ekfca'"):
        check_options_table({"ekfca": {"damping": 0.1}})
    check_options_table({"traker": {"proj_dim": 8}}, other_names_ok=True)  # the benchmark's peers
    with pytest.raises(DatablameError, match=r"attribution.options.trak.damping"):
        check_options_table({"traker": {}, "trak": {"damping": "high"}}, other_names_ok=True)


def test_describe_all_is_plain_and_complete():
    described = describe_all()
    assert [d["name"] for d in described] == sorted(REGISTRY)
    for d in described:
        assert set(d) == {"name", "family", "sign", "unit", "cost", "module", "options"}
        assert d["family"] in FAMILIES and d["unit"] and d["cost"]
        assert [o["name"] for o in d["options"]] == list(REGISTRY[d["name"]].Options.model_fields)
        for o in d["options"]:
            assert o["description"] and o["type"], (d["name"], o["name"])
            assert o["default"] == OLD_DEFAULTS[d["name"]][o["name"]]
    ekfac = next(d for d in described if d["name"] == "ekfac")
    damping = next(o for o in ekfac["options"] if o["name"] == "damping")
    assert damping["type"] == "float | null (>= 0)" and damping["default"] is None
