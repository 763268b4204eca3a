"""`datablame verify`: prove an attribution by retraining without the rows (seed 001, part 5).

For each query of an attribution result, each method and each k:

- **top-k**: retrain without the method's k highest-scoring rows for that query
  (`strategy: flip` keeps the rows but corrupts their completions: seed 001's label flip);
- **control**: retrain without k random rows (`controls` draws per seed), the same for every
  query and method, so one set of control models serves them all;
- **baseline**: retrain with nothing removed;

each from the run's initial weights with the run's hyper-parameters, once per training seed.
Measured: the query's completion loss and log-probability, the greedy generation, whether it
still matches the original completion exactly, and its MiniLM similarity to it. The effect
(stats.py) is the loss rise against the control with a t-interval and p-value over seeds;
the verdict is seed 001's confirmed / partial / not influential.

Cost: seeds x (1 + len(k) x controls + queries x methods x len(k)) trainings (fewer when two
methods pick the same rows); every finished training is cached under <run>/verify/jobs, so
adding a method, a query or a seed later trains only what is new.

`strategy: loo` (leave_one_out) retrains once without each row (small corpora) and compares
the measured effect of every row with each method's scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datablame import __version__
from datablame.config import RayConfig, RunConfig
from datablame.data.corpus import Corpus, Query
from datablame.errors import DatablameError
from datablame.layout import AttributionLayout, RunLayout
from datablame.utils.io import atomic_save_npz, atomic_write_json
from datablame.utils.safe_load import NPZ_UNREADABLE, read_json
from datablame.verify.common import machine_facts, method_scores, retrain_context, with_flags
from datablame.verify.outputs import same_output, semantic_similarity
from datablame.verify.retrain import RetrainJob
from datablame.verify.stats import (
    VERDICTS,
    bootstrap_mean,
    removal_effect,
    spearman,
    t_interval,
    t_test_p,
    verdict,
)
from datablame.verify.sweep import run_jobs

log = logging.getLogger("datablame")
# with one seed the effect has no spread to estimate: the interval and p-value are undefined (null)
ONE_SEED_NOTE = "interval and p-value need >= 2 seeds (verify.seeds or --seeds, e.g. 0,1,2)"


@dataclass
class VerifyReport:
    data: dict[str, Any]  # what verify.json holds
    paths: dict[str, Path]


# --- the attribution result being verified -----------------------------------------------


@dataclass
class _Attribution:
    path: Path
    queries: list[Query]
    methods: list[str]
    rankings: dict[str, list[list[str]]]  # method -> per query, ranked row ids (top_k of the result)
    scores: dict[str, np.ndarray]  # method -> [Q, R] when scores.npz is there


def load_attribution(path: Path, corpus: Corpus) -> _Attribution:
    if not path.is_file():
        raise DatablameError(
            f"no attribution result at {path}",
            "run `datablame attribute --config ...` first, or pass --result PATH",
        )
    raw = read_json(path, what="attribution result",
                    fix="attribute again (datablame attribute --config ...), or pass --result PATH")
    if not isinstance(raw, dict) or not isinstance(raw.get("queries"), list):
        raise DatablameError(f"attribution result {path} is not a datablame results.json",
                             "attribute again (datablame attribute --config ...), or pass --result PATH")
    fp = raw.get("data", {}).get("fingerprint")
    if fp and fp != corpus.fingerprint():
        raise DatablameError(
            f"the attribution result {path} was computed on other training data than this config's",
            "verify with the config that produced the result, or attribute again",
        )
    queries = [Query(q["prompt"], q["completion"], q["query_id"],  # a behaviour-level query keeps its members
                     behaviour=tuple((q.get("measured_over") or {}).get("behaviour", ())),
                     contrast=tuple((q.get("measured_over") or {}).get("contrast", ()))) for q in raw["queries"]]
    methods = [m["name"] for m in raw.get("methods", [])]
    rankings = {m: [[r["row_id"] for r in q["rankings"].get(m, [])] for q in raw["queries"]] for m in methods}
    scores: dict[str, np.ndarray] = {}
    npz = AttributionLayout(path.parent).scores_npz
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as z:
                scores = {m: z[m] for m in z.files if z[m].shape == (len(queries), len(corpus))}
        except NPZ_UNREADABLE as err:
            raise DatablameError(f"the attribution scores {npz} are damaged ({type(err).__name__}: {err})",
                                 "attribute again (datablame attribute --config ...), or delete scores.npz "
                                 "(verify then uses the ranked rows of results.json)") from None
    return _Attribution(path, queries, methods, rankings, scores)


def top_rows(att: _Attribution, corpus_index: dict[str, int], method: str, qi: int, k: int) -> list[int]:
    """The k highest-scoring rows of `method` for query `qi` (ties by row order, as in the report)."""
    if method in att.scores:
        row_scores = att.scores[method][qi]
        top = np.argsort(-row_scores, kind="stable")[:k]
        if not np.isfinite(row_scores[top]).all():  # a retrieval-cascade result ranks only its candidates
            raise DatablameError(
                f"{method} ranks only {int(np.isfinite(row_scores).sum())} candidate rows for query {qi} "
                f"(retrieval cascade); k={k} needs more",
                "use a smaller verify.k, or attribute again with larger retrieval stage sizes or retrieval.enabled: false",
            )
        return [int(j) for j in top]
    ranked = att.rankings.get(method, [[]])[qi]
    if len(ranked) < k:
        raise DatablameError(
            f"the result ranks only {len(ranked)} rows per query for {method} and has no scores.npz; k={k} needs more",
            "attribute again with attribution.top_k >= the largest k (scores.npz keeps the full ranking)",
        )
    return [corpus_index[r] for r in ranked[:k]]


def _seed_from(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12], 16)


def control_rows(n_rows: int, k: int, seed: int, draw: int, control_seed: int) -> list[int]:
    """k random rows for the control of training seed `seed`, draw `draw` (deterministic)."""
    if k > n_rows:
        raise DatablameError(f"k={k} is larger than the corpus ({n_rows} rows)", "use smaller verify.k")
    rng = np.random.default_rng(_seed_from("control", control_seed, k, seed, draw))
    return sorted(int(i) for i in rng.choice(n_rows, size=k, replace=False))


def flip_pairs(rows: Sequence[int], n_rows: int, mode: str, control_seed: int) -> tuple[tuple[int, int], ...]:
    """(row, donor) pairs: each row takes the completion of a random row outside the set
    (`shuffle`), or the constant flip text (`constant`, donor -1)."""
    rows = sorted(set(rows))
    if mode == "constant":
        return tuple((r, -1) for r in rows)
    outside = np.setdiff1d(np.arange(n_rows), rows)
    if len(outside) < len(rows):
        raise DatablameError("too few rows outside the flipped set to take completions from", "use flip: constant")
    rng = np.random.default_rng(_seed_from("flip", control_seed, rows))
    donors = rng.choice(outside, size=len(rows), replace=False)
    return tuple((r, int(d)) for r, d in zip(rows, donors, strict=True))


def _modify(rows: Sequence[int], seed: int, strategy: str, vcfg, n_rows: int, kind: str, **tags) -> RetrainJob:
    if strategy == "flip":
        return RetrainJob(seed, flipped=flip_pairs(rows, n_rows, vcfg.flip, vcfg.control_seed), kind=kind, tags=tags)
    return RetrainJob(seed, removed=tuple(sorted(rows)), kind=kind, tags=tags)


# --- verify ------------------------------------------------------------------------------


def verify(
    cfg: RunConfig,
    *,
    result_path: str | Path | None = None,
    methods: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    ks: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    controls: int | None = None,
    strategy: str | None = None,
    ray: RayConfig | None = None,
    progress: bool = True,
) -> VerifyReport:
    """Retrain without (or with corrupted) top-k rows vs random rows vs nothing; write
    <run>/verify/verify[_flip].json and effect_vs_k[_flip].png."""
    from datablame.inputs import load_corpus
    from datablame.runs import prepare_run_dir

    overrides = {k: v for k, v in {"k": list(ks) if ks else None, "seeds": list(seeds) if seeds else None,
                                   "controls": controls, "strategy": strategy}.items() if v is not None}
    vcfg = with_flags(cfg.verify, overrides, {"k": "--k", "seeds": "--seeds", "controls": "--controls",
                                              "strategy": "--strategy"})
    if vcfg.strategy == "loo":
        return leave_one_out(cfg, result_path=result_path, methods=methods, queries=queries,
                             seeds=vcfg.seeds, ray=ray, progress=progress)
    t0 = time.perf_counter()
    machine_start = machine_facts()
    run_dir = prepare_run_dir(cfg)
    corpus = load_corpus(cfg)[0]
    att = load_attribution(Path(result_path) if result_path else RunLayout(run_dir).results_json, corpus)
    methods = list(methods or vcfg.methods or att.methods)
    unknown = [m for m in methods if m not in att.methods and m not in att.scores]
    if unknown:
        raise DatablameError(
            f"methods {unknown} are not in the attribution result {att.path} (it has {att.methods})",
            "attribute with those methods first (datablame attribute --method ...), or drop them",
        )
    qids = list(queries or vcfg.queries) or [q.query_id for q in att.queries]
    qpos = {q.query_id: i for i, q in enumerate(att.queries)}
    missing = [q for q in qids if q not in qpos]
    if missing:
        raise DatablameError(f"queries {missing} are not in the result", f"choose from {sorted(qpos)}")
    ctx = retrain_context(cfg, run_dir, corpus, att.queries, generate=True, max_new_tokens=vcfg.max_new_tokens,
                          epochs=vcfg.epochs, flip_text=vcfg.flip_text)
    n, index = len(corpus), corpus.index_of()
    strat = vcfg.strategy

    base = {s: RetrainJob(s, kind="baseline") for s in vcfg.seeds}
    ctrl = {(k, s, d): _modify(control_rows(n, k, s, d, vcfg.control_seed), s, strat, vcfg, n, "control", k=k, draw=d)
            for k in vcfg.k for s in vcfg.seeds for d in range(vcfg.controls)}
    chosen = {(m, q, k): top_rows(att, index, m, qpos[q], k) for m in methods for q in qids for k in vcfg.k}
    top = {(m, q, k, s): _modify(chosen[m, q, k], s, strat, vcfg, n, "top-k", method=m, query=q, k=k)
           for (m, q, k) in chosen for s in vcfg.seeds}
    jobs = [*base.values(), *ctrl.values(), *top.values()]
    outcome = run_jobs(ctx, jobs, RunLayout(run_dir).verify_dir, ray or vcfg.ray, desc=f"verify ({strat})", progress=progress)
    rec = dict(zip([id(j) for j in jobs], (outcome.record(i) for i in range(len(jobs))), strict=True))

    def loss(job: RetrainJob, q: str) -> float:
        return float(rec[id(job)]["loss"][qpos[q]])

    def gen(job: RetrainJob, q: str) -> str:
        return rec[id(job)]["generation"][qpos[q]]

    # The reference output of a retrained model is the baseline's generation with the same
    # seed (seed 001 step 1; seed = training.seed reproduces the attributed model itself);
    # the attributed completion is compared too (it may be given, not generated).
    original = {q: att.queries[qpos[q]].completion or "" for q in qids}
    ref = {(s, q): gen(base[s], q) for s in vcfg.seeds for q in qids}
    pairs = sorted({(gen(j, q), r) for j in jobs for q in qids for r in (ref[j.seed, q], original[q])})
    sims = dict(zip(pairs, semantic_similarity([p[0] for p in pairs], [p[1] for p in pairs]), strict=True))

    def moved(jobs_: Sequence[RetrainJob], q: str) -> dict[str, float]:
        g = [(gen(j, q), ref[j.seed, q]) for j in jobs_]
        s = np.array([sims[x, r] for x, r in g])
        return {"changed": float(np.mean([not same_output(x, r) for x, r in g])),
                "similarity": float(s.mean()),
                "big_change": float(np.mean(s < vcfg.similarity_threshold)),
                "completion_match": float(np.mean([same_output(x, original[q]) for x, _ in g])),
                "completion_similarity": float(np.mean([sims[x, original[q]] for x, _ in g]))}

    alpha = 1 - vcfg.confidence
    S, D = vcfg.seeds, range(vcfg.controls)
    per_query, summary = [], []
    for m in methods:
        for k in vcfg.k:
            seed_effects = np.zeros((len(qids), len(S)))
            seed_top_rise = np.zeros((len(qids), len(S)))
            verdicts = dict.fromkeys(VERDICTS, 0)
            for qi, q in enumerate(qids):
                b = np.array([loss(base[s], q) for s in S])
                t = np.array([loss(top[m, q, k, s], q) for s in S])
                c = np.array([[loss(ctrl[k, s, d], q) for d in D] for s in S])
                eff = removal_effect(t, c, b, vcfg.confidence)
                mt = moved([top[m, q, k, s] for s in S], q)
                mc = moved([ctrl[k, s, d] for s in S for d in D], q)
                v = verdict(eff, mt["changed"], mc["changed"], alpha)
                verdicts[v] += 1
                seed_effects[qi] = t - c.mean(axis=1)
                seed_top_rise[qi] = t - b
                n_tok = rec[id(base[S[0]])]["tokens"][qpos[q]]
                per_query.append({
                    "method": m, "k": k, "query_id": q, "verdict": v, **eff.to_dict(),
                    # the same effect on the completion's summed log-probability (nats)
                    "logprob_effect": -eff.effect.mean * n_tok, "completion_tokens": n_tok,
                    "top": mt, "control": mc,
                    "rows": [corpus[i].row_id for i in chosen[m, q, k]],
                    "generations": [gen(top[m, q, k, s], q) for s in S],
                    "original": original[q],
                    **({"interval_note": ONE_SEED_NOTE} if len(S) < 2 else {}),
                })
            pooled = seed_effects.mean(axis=0)  # per seed, averaged over queries
            iv = t_interval(pooled, vcfg.confidence)
            summary.append({
                "method": m, "k": k, "queries": len(qids), "effect": iv.to_dict(), "p_value": t_test_p(pooled),
                "top_rise": t_interval(seed_top_rise.mean(axis=0), vcfg.confidence).to_dict(),
                "verdicts": verdicts,
                **({"interval_note": ONE_SEED_NOTE} if len(S) < 2 else {}),
            })
    bands = []
    for k in vcfg.k:
        rises = [np.mean([loss(ctrl[k, s, d], q) - loss(base[s], q) for q in qids]) for s in S for d in D]
        bands.append({"k": k, "control_rise": t_interval(rises, vcfg.confidence).to_dict(),
                      "control_rise_min": float(np.min(rises)), "control_rise_max": float(np.max(rises))})
    base_moved = {q: moved([base[s] for s in S], q) for q in qids}
    data = {
        "kind": "verify", "strategy": strat, "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "result": str(att.path), "run_dir": str(run_dir),
        "settings": {**vcfg.model_dump(mode="json", exclude={"ray", "methods", "queries"}),
                     "methods": methods, "queries": qids, "seeds": list(S)},
        "sign": "effect > 0: removing (or corrupting) the method's top-k rows raised the query's "
                "completion loss (nats/token) more than the same number of random rows did",
        "summary": summary, "control_band": bands, "per_query": per_query,
        "baseline": {"loss": {q: float(np.mean([loss(base[s], q) for s in S])) for q in qids},
                     "completion_match": float(np.mean([base_moved[q]["completion_match"] for q in qids])),
                     "generations": {q: [gen(base[s], q) for s in S] for q in qids}},
        "design": {"jobs": len(jobs), "unique_jobs": len(outcome.results), "trained": outcome.trained,
                   "reused": outcome.reused, "runner": outcome.runner, "ray_cpus": outcome.cpus},
        "timing": {"wall_s": time.perf_counter() - t0, "sweep_s": outcome.seconds,
                   "train_s_per_model": _mean_train_seconds(outcome.results.values())},
        "machine": {"start": machine_start, "end": machine_facts()},
    }
    suffix = "" if strat == "remove" else f"_{strat}"
    layout = RunLayout(run_dir)
    paths = {"json": layout.verify_json(suffix), "plot": layout.verify_plot(suffix)}
    from datablame.verify.plots import plot_effect_vs_k

    plot_effect_vs_k(data, paths["plot"])
    data["plots"] = {"effect_vs_k": str(paths["plot"])}
    atomic_write_json(paths["json"], data)
    return VerifyReport(data, paths)


def _mean_train_seconds(records) -> float | None:
    secs = [r.get("train_seconds") for r in records if r.get("train_seconds")]
    return float(np.mean(secs)) if secs else None


# --- leave-one-out -------------------------------------------------------------------------


def leave_one_out(
    cfg: RunConfig,
    *,
    result_path: str | Path | None = None,
    methods: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    rows: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    ray: RayConfig | None = None,
    progress: bool = True,
) -> VerifyReport:
    """Retrain once without each row (per seed); per query, the effect of row r is
    loss(without r) - loss(baseline), averaged over seeds (> 0: the row lowered the loss,
    the methods' sign). Compared with each method's scores by per-query Spearman (mean,
    bootstrap CI over queries) and top-10 overlap. With two or more seeds, the split-half
    agreement of the LOO effects with themselves is reported too: the ceiling any method can
    reach given the retraining noise. Writes <run>/verify/loo.json, loo_effects.npz, loo.png."""
    from datablame.inputs import load_corpus, prepare_inputs
    from datablame.runs import prepare_run_dir

    vcfg = cfg.verify
    seeds = list(seeds or vcfg.seeds)
    t0 = time.perf_counter()
    machine_start = machine_facts()
    run_dir = prepare_run_dir(cfg)
    corpus = load_corpus(cfg)[0]
    n = len(corpus)
    candidates = sorted(set(rows)) if rows is not None else list(range(n))
    if len(candidates) > vcfg.loo_max_rows:
        raise DatablameError(
            f"leave-one-out over {len(candidates)} rows means {len(candidates) * len(seeds)} trainings "
            f"(verify.loo_max_rows is {vcfg.loo_max_rows})",
            "use `datablame lds` or top-k removal for large corpora, or raise verify.loo_max_rows",
        )
    path = Path(result_path) if result_path else RunLayout(run_dir).results_json
    att = load_attribution(path, corpus) if path.is_file() else None
    methods = list(methods or vcfg.methods or (att.methods if att else cfg.attribution.method_names()))
    inputs = None
    scores = {m: att.scores[m] for m in methods if att and m in att.scores}
    described, errors = {}, {}
    if att is not None:
        qlist = att.queries
    else:
        inputs = prepare_inputs(cfg)[0]
        qlist = inputs.queries
    todo = [m for m in methods if m not in scores]
    if todo:
        inputs = inputs or prepare_inputs(cfg)[0]
        if [q.completion for q in inputs.queries] != [q.completion for q in qlist]:
            raise DatablameError("the config's queries differ from the attribution result's",
                                 "attribute again with the current config")
        more, described, errors = method_scores(cfg, inputs, todo)
        scores.update(more)
    qids = list(queries or vcfg.queries) or [q.query_id for q in qlist]
    qpos = {q.query_id: i for i, q in enumerate(qlist)}
    ctx = retrain_context(cfg, run_dir, corpus, qlist, generate=False, epochs=vcfg.epochs)
    base = [RetrainJob(s, kind="baseline") for s in seeds]
    loo = [RetrainJob(s, removed=(r,), kind="loo", tags={"row": r}) for r in candidates for s in seeds]
    outcome = run_jobs(ctx, [*base, *loo], RunLayout(run_dir).verify_dir, ray or vcfg.ray, desc="leave-one-out",
                       progress=progress)
    recs = [outcome.record(i) for i in range(len(base) + len(loo))]
    qi = [qpos[q] for q in qids]
    b = np.array([[r["loss"][j] for j in qi] for r in recs[: len(base)]])  # [S, Q]
    per_seed = np.zeros((len(seeds), len(qids), len(candidates)))
    for i, r in enumerate(recs[len(base):]):
        ri, si = divmod(i, len(seeds))
        per_seed[si, :, ri] = np.array([r["loss"][j] for j in qi]) - b[si]
    effect = per_seed.mean(axis=0)  # [Q, C]
    comparisons = {}
    for m, s in scores.items():
        sub = s[np.ix_(qi, candidates)]
        rho = [spearman(sub[a], effect[a]) for a in range(len(qids))]
        pear = [float(np.corrcoef(sub[a], effect[a])[0, 1]) if np.std(sub[a]) > 0 else float("nan")
                for a in range(len(qids))]
        k = min(10, len(candidates))
        overlap = [len(set(np.argsort(-sub[a])[:k]) & set(np.argsort(-effect[a])[:k])) / k for a in range(len(qids))]
        comparisons[m] = {
            "spearman": bootstrap_mean(rho, confidence=vcfg.confidence, seed=0).to_dict(),
            "pearson": bootstrap_mean(pear, confidence=vcfg.confidence, seed=0).to_dict(),
            f"top{k}_overlap": float(np.mean(overlap)),
            "per_query_spearman": dict(zip(qids, rho, strict=True)),
        }
    reliability = None
    if len(seeds) >= 2:
        half = len(seeds) // 2
        a, c = per_seed[:half].mean(axis=0), per_seed[half:].mean(axis=0)
        reliability = bootstrap_mean([spearman(a[j], c[j]) for j in range(len(qids))],
                                     confidence=vcfg.confidence, seed=0).to_dict()
    layout = RunLayout(run_dir)
    paths = {"json": layout.loo_json, "effects": layout.loo_effects, "plot": layout.loo_plot}
    atomic_save_npz(paths["effects"], {"effect": effect, "per_seed": per_seed, "rows": np.array(candidates),
                                      **{f"scores_{m}": s[np.ix_(qi, candidates)] for m, s in scores.items()}})
    data = {
        "kind": "leave_one_out", "version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(run_dir), "rows": len(candidates), "queries": qids, "seeds": seeds,
        "sign": "LOO effect > 0: removing the row raised the query's completion loss (nats/token), "
                "i.e. the row pushed the loss down, the methods' sign",
        "comparisons": comparisons, "split_half_reliability": reliability,
        "method_errors": errors, "methods": described,
        "top_rows": {q: [{"row_id": corpus[candidates[j]].row_id, "effect": float(effect[a, j])}
                         for j in np.argsort(-effect[a])[:10]] for a, q in enumerate(qids)},
        "design": {"trainings": len(base) + len(loo), "trained": outcome.trained, "reused": outcome.reused,
                   "runner": outcome.runner, "ray_cpus": outcome.cpus},
        "timing": {"wall_s": time.perf_counter() - t0, "sweep_s": outcome.seconds,
                   "train_s_per_model": _mean_train_seconds(outcome.results.values())},
        "machine": {"start": machine_start, "end": machine_facts()},
    }
    from datablame.verify.plots import plot_loo

    plot_loo(effect, {m: s[np.ix_(qi, candidates)] for m, s in scores.items()}, qids, paths["plot"])
    atomic_write_json(paths["json"], data)
    return VerifyReport(data, paths)
