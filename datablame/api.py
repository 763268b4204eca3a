"""The Python API; the CLI only wraps these functions.

    cfg = load_config("run.yaml")
    outcome = run(cfg)             # corpus -> model -> fine-tune -> attribute -> report
    result = attribute(cfg)        # attribute again with a trained run (reuses the model)

Every stage has its entry point here (train, attribute, run, index, inspect, verify, lds,
bench, demo, write_example) and the CLI calls nothing else; what the stages share below
this module (load_corpus, train, prepare_inputs) lives in `datablame.inputs`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datablame import __version__
from datablame.api_serve import ServedRun, attribute_query, prepare_serving  # noqa: F401 (re-exported)
from datablame.api_tabular import (  # noqa: F401 (re-exported: the api is the one door)
    TableVerifyReport,
    attribute_table,
    demo_table,
    describe_tabular_methods,
    verify_table,
)
from datablame.config import RunConfig
from datablame.config_tabular import TabularRunConfig
from datablame.data.corpus import Corpus, Query
from datablame.data.queries import resolve_queries
from datablame.errors import DatablameError
from datablame.features.gradients import featurize_range, featurizer_for
from datablame.inputs import load_corpus, prepare_inputs, store_dir, train  # noqa: F401 (re-exported)
from datablame.layout import AttributionLayout, RunLayout
from datablame.methods import AttributionContext, Method, get_method, run_method
from datablame.models.loading import LoadedModel
from datablame.report import AttributionResult, build_result, write_result
from datablame.report.results import load_result
from datablame.runs import prepare_run_dir
from datablame.utils.io import atomic_save_npy, atomic_save_npz, atomic_write_json

log = logging.getLogger("datablame")


@dataclass
class RunOutcome:
    run_dir: Path
    corpus: Corpus
    result: AttributionResult
    paths: dict[str, Path]


def load_config(path: str | Path, *, other_names_ok: bool = False, table_ok: bool = False) -> RunConfig:
    """The run config of a YAML file (`datablame.config.load_config`), with every
    `attribution.options.<method>` checked against that method's options (`check_options`),
    so an unknown method or option, or a wrong-typed value, fails here, before any work.
    `other_names_ok`: entries that name no method are left alone (the benchmark's peers).
    `table_ok`: a table config (`data.kind: table`) is returned too; else it is refused, naming
    the commands that take one (attribute, verify)."""
    from datablame.config import load_config as read_config

    cfg = read_config(path)
    if isinstance(cfg, TabularRunConfig):
        return _table_config_ok(cfg, path, table_ok)  # type: ignore[return-value]
    try:
        check_options(cfg, other_names_ok=other_names_ok)
    except DatablameError as err:
        raise DatablameError(f"invalid config {path}: {err.problem}", err.fix) from None
    return cfg


def check_options(cfg: RunConfig, *, other_names_ok: bool = False) -> None:
    """Every `attribution.options.<name>`: a registered method (unless `other_names_ok`) whose
    options validate (`datablame.methods.base.MethodOptions`); nothing is built or loaded."""
    from datablame.methods.base import check_options_table

    if isinstance(cfg, TabularRunConfig):  # the tabular methods' own registry
        from datablame.tabular.pipeline import check_methods

        check_methods(list(cfg.attribution.methods), cfg.attribution.options)
        return
    check_options_table(cfg.attribution.options, other_names_ok=other_names_ok)


def describe_methods() -> list[dict]:
    """Every method with family, sign, unit, cost and options (name, type, default,
    description) as plain dicts (`datablame methods`)."""
    from datablame.methods import describe_all

    return describe_all()


def evaluate_against_truth(
    corpus: Corpus, queries: list[Query], scores: dict[str, np.ndarray], truth: dict[str, list[str]], k: int
) -> dict:
    from datablame.metrics import average_precision, mean_metric, recall_at_k

    idx = corpus.index_of()
    per_method = {}
    for name, mat in scores.items():
        rec, ap = [], []
        for qi, q in enumerate(queries):
            if q.query_id not in truth:
                continue
            rel = [idx[r] for r in truth[q.query_id] if r in idx]
            rec.append(recall_at_k(mat[qi], rel, k))
            ap.append(average_precision(mat[qi], rel))
        per_method[name] = {f"recall@{k}": mean_metric(rec), "mAP": mean_metric(ap), "queries": len(rec)}
    summary = "; ".join(f"{m}: recall@{k}={v[f'recall@{k}']:.3f}, mAP={v['mAP']:.3f}" for m, v in per_method.items())
    return {"k": k, "per_method": per_method, "summary": summary}


def index(
    cfg: RunConfig, *, faiss: str = "auto", overwrite: bool = False, progress: bool = True, text_indices: bool = True,
    faiss_metric: str = "cosine",
) -> dict:
    """Featurize every training row once into `<run>/store` (resumable, sharded fp16) and
    build a FAISS index over it; later `attribute` calls read rows from the store. With
    `text_indices`, also build the retrieval cascade's BM25 and MiniLM embedding indices
    under `<run>/index/text` (reused when already built for this corpus and model)."""
    from datablame.store import build_faiss_index, build_store

    inputs, _ = prepare_inputs(cfg, queries=False, use_store=False)
    layout = RunLayout(inputs.run_dir)
    path = layout.store_dir
    feat = featurizer_for(inputs)
    losses_dir = layout.store_row_losses_dir

    def featurize(start: int, stop: int):
        f, losses = featurize_range(inputs, start, stop)
        losses_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(layout.row_losses_file(start, stop), losses.numpy())
        return f

    t0 = time.perf_counter()
    info = build_store(
        path, n_rows=len(inputs.corpus), row_ids=[r.row_id for r in inputs.corpus],
        identity=inputs.identity().store(),
        featurize=featurize, dim=feat.dim, shard_size=cfg.attribution.store.shard_rows,
        config=cfg.model_dump(mode="json"), progress=progress, overwrite=overwrite,
    )
    summary = {
        "store": str(path), "rows": info.n_rows, "dim": info.dim, "shards": info.n_shards,
        "shards_computed": info.shards_computed, "shards_reused": info.shards_reused,
        "featurize_s": info.seconds, "rows_per_s": info.rows_computed / info.seconds if info.seconds else None,
        "bytes": info.nbytes, "modules": inputs.shared.grad_modules,
    }
    kind = faiss if faiss != "auto" else ("flat" if info.n_rows < 50_000 else "ivf")
    if kind != "none":
        from datablame.store import open_store

        store = open_store(path)
        idx = build_faiss_index(store, kind, metric=faiss_metric, k=min(10, info.n_rows))  # type: ignore[arg-type]
        idx.save(layout.faiss_index)
        summary["faiss"] = {k: v for k, v in idx.info.items() if k != "store_identity"}
    if text_indices:
        from datablame.retrieval.candidates import run_text_indices

        summary["text_indices"] = run_text_indices(inputs, progress=progress)[1]
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_json(layout.index_summary, summary)
    return summary


INSPECT_KINDS = {"ekfac": "ekfac", "kfac": "kfac", "diagonal": "diag_influence"}  # factor kind -> its method


def inspect(
    cfg: RunConfig, layer: str, *, kind: str = "ekfac", out_dir: str | Path | None = None, damping: float | None = None,
) -> dict[str, Path]:
    """Plot one layer's curvature factors (seed 000's factor inspection) for the run's model.

    Fits the `kind` factors (ekfac, kfac or diagonal) in the run's projected gradient space
    with the options of `attribution.options.<ekfac|kfac|diag_influence>`, or reuses the ones
    `attribute` saved under `<run>/attribution/curvature/` (and saves them there for it), then
    writes `<module>_lambda_matrix.png` (heatmap of Λ), `<module>_lambda_sorted.png` (sorted Λ
    and the damping, symlog) and `<module>_lambda.json` under `out_dir` (default `<run>/inspect`).
    `layer`: a module name, its unique suffix or a regex matching one selected module.
    Returns the paths (heatmap, sorted, summary, factors)."""
    from datablame.curvature.inspect import inspect_factors, resolve_module
    from datablame.features.preconditioner import fit_preconditioner

    if kind not in INSPECT_KINDS:
        raise DatablameError(f"unknown factor kind {kind!r}", f"use one of {sorted(INSPECT_KINDS)}")
    method_name = INSPECT_KINDS[kind]
    method = get_method(method_name, **cfg.attribution.options.get(method_name, {}))
    inputs, _ = prepare_inputs(cfg, queries=False, use_store=False)
    names = [n for n, _, _ in featurizer_for(inputs).shapes]
    try:  # before fitting: a typo must not cost a pass over the corpus
        module = resolve_module(names, layer)
    except DatablameError as err:
        sel = cfg.attribution.modules
        raise DatablameError(
            f"{err.problem} (the modules that attribution.modules selects: "
            f"{f'pattern {sel.pattern!r}' if sel.pattern else f'the {sel.preset!r} preset'}, layers "
            f"{sel.layers or 'all'})",
            f"{err.fix} (a unique suffix or a regex works too), or widen attribution.modules (pattern or "
            "preset) to include the layer",
        ) from None
    pre = fit_preconditioner(inputs, kind, fisher=method.fisher, fit_rows=method.fit_rows, seed=method.seed,
                             reuse=method.reuse)
    paths = inspect_factors(pre, module, Path(out_dir) if out_dir else RunLayout(inputs.run_dir).inspect_dir, kind=kind,
                            damping=method.damping if damping is None else damping, damping_scale=method.damping_scale)
    paths["factors"] = RunLayout(inputs.run_dir).factor_path(kind)
    return paths


def attribute(
    cfg: RunConfig,
    *,
    corpus: Corpus | None = None,
    loaded: LoadedModel | None = None,
    methods: list[str] | None = None,
    retrieval_recall: bool | None = None,
    progress: bool = True,
) -> tuple[AttributionResult, dict[str, Path]]:
    """Rank training rows for each query with each method; write results.json, md, html.

    With `attribution.retrieval.enabled`, the retrieval cascade runs per query and the
    (gradient) methods rank only its candidates; results.json gets a "retrieval" section
    with each stage's rows in/out, seconds and recall (see `datablame.retrieval.candidates`;
    `retrieval_recall`: None = report recall when the feature store makes it cheap).
    A table config (`data.kind: table`) trains or loads its model and ranks train rows for its
    test rows instead (`attribute_table`)."""
    if isinstance(cfg, TabularRunConfig):
        return attribute_table(cfg, methods=methods)
    methods = methods or cfg.attribution.method_names()
    check_options(cfg)  # fail on a typo or a bad option before any model is loaded
    for name in methods:
        get_method(name, **cfg.attribution.options.get(name, {}))
    if cfg.data.source not in ("planted", "hops"):  # and on missing or malformed queries
        resolve_queries(cfg)
    cascade_on = cfg.attribution.retrieval.enabled
    if cascade_on:
        from datablame.retrieval.candidates import check_cascade_request

        check_cascade_request(cfg.attribution, methods)
    t0 = time.perf_counter()
    inputs, truth = prepare_inputs(cfg, corpus=corpus, loaded=loaded)
    timing = {"prepare_s": time.perf_counter() - t0}
    scores, described, retrieval = {}, [], None
    fitted: dict[str, Method] = {}  # methods that may say what supports each blamed row
    if cascade_on:
        from datablame.retrieval.candidates import attribute_with_cascade, run_text_indices

        r = cfg.attribution.retrieval
        t = time.perf_counter()
        indices, index_info = run_text_indices(inputs, bm25=r.bm25_k is not None, embedding=r.embedding_k is not None,
                                               progress=progress)
        timing["text_indices_s"] = time.perf_counter() - t
        ms = [get_method(name, **cfg.attribution.options.get(name, {})) for name in methods]
        fitted = {m.name: m for m in ms}
        done = attribute_with_cascade(inputs, ms, indices=indices, index_info=index_info, evaluate=retrieval_recall,
                                      progress=progress)
        scores, described, retrieval = done.scores, done.methods, done.report
        timing.update(done.timing)
    else:
        for name in methods:
            run = run_method(inputs, name)
            scores[name] = run.scores
            timing[f"{name}_s"] = run.seconds
            described.append(run.method.describe())
            fitted[name] = run.method
    result = build_result(
        version=__version__,
        config=cfg.model_dump(mode="json"),
        model_info={**inputs.model_info.as_dict(), "modules": inputs.shared.grad_modules or []},
        corpus=inputs.corpus, queries=inputs.queries, generated=inputs.generated,
        scores=scores, methods=described, k=cfg.attribution.top_k, timing=timing,
    )
    result.data["truncated_rows"] = len(inputs.rows.truncated)
    _add_evidence(result, inputs, scores, truth, cfg.attribution.top_k)
    _add_row_evidence(result, inputs, fitted)
    _add_store_search(result, inputs, fitted)
    if retrieval is not None:
        from datablame.retrieval.candidates import drop_unranked

        drop_unranked(result)  # rows outside a query's cascade candidates have no rank
        result.retrieval = retrieval
    if truth:
        result.evaluation = evaluate_against_truth(inputs.corpus, inputs.queries, scores, truth, cfg.attribution.top_k)
    return result, _write_outputs(cfg, inputs, result, scores)


def _add_evidence(result: AttributionResult, inputs: AttributionContext, scores: dict[str, np.ndarray],
                  truth: dict[str, list[str]], k: int) -> None:
    """Per query: whether the model produces the completion (loss, greedy match, base-model
    loss), how separated and agreed each method's ranking is, planted/decoy marks, and the
    run's verify / LDS figures when they exist (README "Did the model learn it, and how sure...")."""
    from datablame.features.behaviour import query_behaviour
    from datablame.report.confidence import add_confidence, attach_checks

    t = time.perf_counter()
    for q, b in zip(result.queries, query_behaviour(inputs), strict=True):
        q.behaviour = b.as_dict()
    result.timing["behaviour_s"] = time.perf_counter() - t
    add_confidence(result, scores, k, truth or None)
    attach_checks(result, inputs.run_dir)


def _add_row_evidence(result: AttributionResult, inputs: AttributionContext, fitted: dict[str, Method]) -> None:
    """Each blamed row's evidence from the methods that give it (`Method.evidence`, e.g. fused)."""
    index = {r.row_id: i for i, r in enumerate(inputs.corpus)}
    for qi, q in enumerate(result.queries):
        for name, rows in q.rankings.items():
            method = fitted.get(name)
            found = method.evidence(inputs, qi, [index[r.row_id] for r in rows]) if method is not None else None
            for r, ev in zip(rows, found or [], strict=False):
                r.evidence = ev


def _add_store_search(result: AttributionResult, inputs: AttributionContext, fitted: dict[str, Method]) -> None:
    """results.json's `store_search`: which path (ann / exact) answered each method, and the
    ANN path's measured recall@10 vs exact (`datablame.features.ann`)."""
    from datablame.features.ann import search_report

    report = search_report(inputs, fitted)
    if report is None:
        return
    result.data["store_search"] = report
    if any(m["path"] == "ann" for m in report["methods"].values()):
        from datablame.retrieval.candidates import drop_unranked

        drop_unranked(result)  # rows the index did not propose have no rank (score -inf)


def refresh_checks(cfg: RunConfig) -> Path | None:
    """After `verify` or `lds`: rewrite the run's results (json, md, html) with their figures in
    each query's `confidence.checks`. Returns results.json, or None when there is none."""
    from datablame.report.confidence import attach_checks

    layout = RunLayout(cfg.output.dir)
    if not layout.results_json.is_file():
        return None
    try:
        result = load_result(layout.results_json)
    except DatablameError as err:
        log.warning("could not add the checks to %s: %s", layout.results_json, err.problem)
        return None
    if attach_checks(result, cfg.output.dir):
        write_result(result, layout.attribution_dir)
    return layout.results_json


def _write_outputs(cfg: RunConfig, inputs: AttributionContext, result: AttributionResult,
                   scores: dict[str, np.ndarray]) -> dict[str, Path]:
    """results.json (with the data, model and store it came from), md, html, scores.npz and the
    comparison: all written before the previous result moves to `attribution/history/<time>/`."""
    from datablame.report.history import publish_results, store_provenance
    from datablame.runs import trained_data_fingerprint

    if not cfg.attribution.checkpoint and inputs.run_dir is not None:
        result.model["trained_on_data"] = trained_data_fingerprint(inputs.run_dir)
    result.data["store"] = store_provenance(inputs.store) if inputs.store is not None else None

    def write(staging: Path) -> dict[str, Path]:
        paths = write_result(result, staging)
        paths["scores"] = atomic_save_npz(AttributionLayout(staging).scores_npz, scores)
        if len(scores) > 1:
            from datablame.report.compare import write_comparison

            paths.update(write_comparison(scores, cfg.attribution.top_k, staging))
        return paths

    paths, previous = publish_results(RunLayout(inputs.run_dir).attribution_dir, write)
    if previous is not None:
        paths["previous_results"] = previous
    return paths


def run(cfg: RunConfig) -> RunOutcome:
    """The whole pipeline: corpus -> (fine-tune) -> attribute -> report."""
    corpus, builtin_queries, _ = load_corpus(cfg)
    resolve_queries(cfg, builtin_queries)  # refuse missing or malformed queries before training
    run_dir = prepare_run_dir(cfg, data_fingerprint=corpus.fingerprint() if cfg.training.enabled else None)
    loaded = train(cfg, corpus) if cfg.training.enabled else None
    result, paths = attribute(cfg, corpus=corpus, loaded=loaded)
    return RunOutcome(run_dir, corpus, result, paths)


def demo(output_dir: str = "runs/demo", overwrite: bool = False) -> RunOutcome:
    """The whole pipeline on the embedded demo (`datablame demo`, see `datablame.demo`)."""
    from datablame.demo import demo_config

    return run(demo_config(output_dir, overwrite))


def write_example(path: str | Path, example: str = "default", *, force: bool = False) -> Path:
    """Write a commented example config (`datablame init`); `example`: a key of
    `datablame.templates.EXAMPLES` (`default` runs offline). Its comments list every
    registered attribution method (family and cost) from the registry."""
    from importlib import resources

    from datablame.templates import EXAMPLES, render
    from datablame.utils.io import atomic_write_text

    path = Path(path)
    if example not in EXAMPLES:
        raise DatablameError(f"unknown example {example!r}", f"use one of {sorted(EXAMPLES)}")
    if path.exists() and not force:
        raise DatablameError(f"{path} already exists", "pass another path, or --force to replace it")
    text = resources.files("datablame.templates").joinpath(EXAMPLES[example]).read_text(encoding="utf-8")
    described = describe_methods()
    width = max(len(d["name"]) + len(d["family"]) for d in described) + 4
    lines = [f"the {len(described)} methods (`datablame methods` for their options):"]
    lines += [f"{(d['name'] + '  [' + d['family'] + ']').ljust(width)}  {_shorten(d['cost'], 58)}" for d in described]
    atomic_write_text(path, render(example, text, lines))
    return path


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def verify(
    cfg: RunConfig, *, result_path: str | Path | None = None, methods: list[str] | None = None,
    queries: list[str] | None = None, ks: list[int] | None = None, seeds: list[int] | None = None,
    controls: int | None = None, strategy: str | None = None, num_cpus: int | None = None,
    address: str | None = None, serial: bool = False, progress: bool = True,
):
    """Retrain without each method's top-k rows (strategy remove), with them label-flipped (flip)
    or without each row (loo) vs k random rows vs nothing: effect, CI, verdict (`datablame verify`,
    see `datablame.verify`). `num_cpus`, `address` and `serial` override `verify.ray`. Writes
    `<run>/verify/`; returns the `VerifyReport` (methods that failed are in its `method_errors`:
    `raise_if_methods_failed(report)`). A table config runs `verify_table` instead."""
    if isinstance(cfg, TabularRunConfig):
        return verify_table(cfg, methods=methods)
    from datablame.verify import verify as run_verify
    from datablame.verify.common import ray_settings

    check_options(cfg)  # before anything is trained
    ray = ray_settings(cfg.verify.ray, num_cpus=num_cpus, address=address, serial=serial)
    report = run_verify(cfg, result_path=result_path, methods=methods, queries=queries, ks=ks, seeds=seeds,
                        controls=controls, strategy=strategy, ray=ray, progress=progress)
    refresh_checks(cfg)  # the verdicts join each query's "how sure" block in results.json and the report
    return report


def lds(
    cfg: RunConfig, methods: list[str] | None = None, *, num_subsets: int | None = None, alpha: float | None = None,
    num_cpus: int | None = None, address: str | None = None, serial: bool = False, progress: bool = True,
):
    """Linear datamodeling score of each method over M retrained subset models (`datablame lds`,
    cached and resumable, see `datablame.verify.lds`). `num_cpus`, `address` and `serial` override
    `lds.ray`. Writes `<run>/lds/`; returns the `LDSReport` (see `raise_if_methods_failed`)."""
    from datablame.verify import lds as run_lds
    from datablame.verify.common import ray_settings

    check_options(cfg)  # before anything is trained
    ray = ray_settings(cfg.lds.ray, num_cpus=num_cpus, address=address, serial=serial)
    report = run_lds(cfg, methods, num_subsets=num_subsets, alpha=alpha, ray=ray, progress=progress)
    refresh_checks(cfg)
    return report


def evaluate(
    cfg: RunConfig, *, types: str | list[str] | None = None, prompts_file: str | Path | None = None,
    mmlu_path: str | Path | None = None, base: str | Path | None = None, tracking: str | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Did the fine-tune help? Completions of the base and fine-tuned model side by side,
    BERTScore and semantic similarity against references, MMLU-style accuracy, charts, and the
    tracker of `tracking:` (`datablame evaluate`, see `datablame.evaluate`). The arguments
    override the config's `evaluate:` / `tracking:` sections. Writes `<run>/evaluate/`;
    returns what evaluation.json holds."""
    from datablame.evaluate import evaluate as run_evaluate

    settings, track = cfg.evaluate, cfg.tracking
    if mmlu_path is not None:
        settings = settings.model_copy(update={"mmlu": settings.mmlu.model_copy(update={"path": str(mmlu_path)})})
    if base is not None:
        settings = settings.model_copy(update={"base": str(base)})
    if tracking is not None or tracking_uri is not None:
        track = track.model_copy(update={k: v for k, v in (("backend", tracking), ("uri", tracking_uri)) if v is not None})
        track = type(track).model_validate(track.model_dump())  # an unknown backend fails here, named
    run_dir = RunLayout(cfg.output.dir).root
    if not RunLayout(run_dir).final_model.is_dir() and base is None and not settings.checkpoints:
        raise DatablameError(f"no fine-tuned model in {run_dir}", "train first: `datablame train --config <run.yaml>`")
    return run_evaluate(run_dir, prompts_file=prompts_file, types=types, settings=settings, tracking=track)


def raise_if_methods_failed(report) -> None:
    """One error naming the methods that failed in a verify or lds report (written already),
    with where the other methods' results are; nothing when all succeeded."""
    from datablame.verify.common import raise_if_methods_failed as check

    check(report.data.get("method_errors") or {}, report.paths)


def bench_config(corpus: str, out_dir: str | Path, **preset) -> RunConfig:
    """The benchmark's preset run config for `corpus` (hops or planted); `preset`: size, seed,
    epochs, overwrite (see `datablame.bench.runner.bench_config`)."""
    from datablame.bench.runner import bench_config as make

    return make(corpus, out_dir, **preset)


def bench(cfg: RunConfig, corpus: str, opts=None, **fields) -> dict:
    """Train (or reuse) the tiny model, run every method and peer, score against ground truth
    (`datablame bench`, see `datablame.bench.runner`); writes `<run>/bench/` and returns bench.json's
    content. `opts`: a `BenchOptions`, or its fields as keywords; with `threads`, torch uses that
    many threads."""
    from datablame.bench.runner import BenchOptions, run_bench

    if opts is not None and fields:
        raise TypeError("pass either a BenchOptions or its fields, not both")
    opts = opts if opts is not None else BenchOptions(**fields)
    if opts.threads is not None:
        import torch

        torch.set_num_threads(max(1, opts.threads))
    return run_bench(cfg, corpus, opts)


# --- tables (data.kind: table; datablame.tabular) --------------------------------------------------


def _table_config_ok(cfg: TabularRunConfig, path: str | Path, table_ok: bool) -> TabularRunConfig:
    if not table_ok:
        raise DatablameError(f"{path} is a table config (data.kind: table); this command works on text corpora.",
                             "use `datablame attribute` or `datablame verify` with it (LDS: verify.checks: [lds]; "
                             "`datablame demo --tabular`).")
    try:
        check_options(cfg)
    except DatablameError as err:
        raise DatablameError(f"invalid config {path}: {err.problem}", err.fix) from None
    return cfg
