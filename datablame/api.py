"""The Python API; the CLI only wraps these functions.

    cfg = load_config("run.yaml")
    outcome = run(cfg)             # corpus -> model -> fine-tune -> attribute -> report
    result = attribute(cfg)        # attribute again with a trained run (reuses the model)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datablame import __version__
from datablame.config import RunConfig
from datablame.data import build_corpus, make_planted
from datablame.data.corpus import Corpus, Query
from datablame.data.queries import config_queries, resolve_queries
from datablame.errors import DatablameError
from datablame.methods import AttributionInputs, get_method
from datablame.methods.grad_align import featurize_range, featurizer_for, store_identity
from datablame.models import load_model
from datablame.models.loading import LoadedModel, save_model
from datablame.models.queries import prepare_queries
from datablame.models.tokenize import Encoded, encode_pairs
from datablame.report import AttributionResult, build_result, write_result
from datablame.runs import check_model_data, prepare_run_dir, record_training_data
from datablame.train import finetune, list_checkpoints
from datablame.utils.io import atomic_save_npy, atomic_save_npz, atomic_write_json, seed_everything

log = logging.getLogger("datablame")


@dataclass
class RunOutcome:
    run_dir: Path
    corpus: Corpus
    result: AttributionResult
    paths: dict[str, Path]


def load_corpus(cfg: RunConfig) -> tuple[Corpus, list[Query], dict[str, list[str]]]:
    """The corpus, plus built-in queries and ground truth for synthetic corpora."""
    if cfg.data.source == "planted":
        p = make_planted(cfg.data.planted)
        return p.corpus, p.queries, p.ground_truth
    if cfg.data.source == "hops":
        from datablame.data.synthetic.hops import make_hops

        h = make_hops(cfg.data.hops)
        missing = [t for t in h.special_tokens if t not in cfg.model.tiny.extra_tokens]
        if cfg.model.kind == "tiny" and missing:
            log.warning("hops function tokens such as %s are not in model.tiny.extra_tokens: the tiny "
                        "tokenizer will split them into pieces (the bench runner adds them)", missing[0])
        return h.corpus, h.queries, h.ground_truth
    return build_corpus(cfg.data), [], {}


def _model_dir(run_dir: Path) -> Path:
    return run_dir / "model"


def train(cfg: RunConfig, corpus: Corpus | None = None) -> LoadedModel:
    """Fine-tune (or reuse the finished fine-tune of this run directory) and return the model.

    The model, its checkpoints and (tiny models) its base are tied to the data they were
    trained on (`<run>/model/fingerprint.json`): when the data changed since, the run is
    refused (or moved aside with `output.overwrite: true`), never reused or resumed."""
    corpus = corpus or load_corpus(cfg)[0]
    data_fp = corpus.fingerprint()
    run_dir = prepare_run_dir(cfg, data_fingerprint=data_fp)
    final = _model_dir(run_dir) / "final"
    if final.is_dir():
        log.info("reusing trained model %s", final)
        return load_model(cfg.model, path_override=str(final), seed=cfg.seed)
    record_training_data(run_dir, cfg, data_fp, len(corpus))  # before any checkpoint exists
    seed_everything(cfg.seed)
    base = load_model(cfg.model, tokenizer_texts=[r.text for r in corpus], seed=cfg.seed)
    if cfg.model.kind == "tiny":
        # a random base only exists in memory: save it so checkpoints/adapters can refer to it
        base_dir = _model_dir(run_dir) / "base"
        if not base_dir.is_dir():
            save_model(base.model, base.tokenizer, base_dir)
        base = load_model(cfg.model, path_override=str(base_dir), seed=cfg.seed)
    res = finetune(base.model, base.tokenizer, corpus, cfg.training, cfg.model, _model_dir(run_dir))
    atomic_write_json(
        _model_dir(run_dir) / "train_summary.json",
        {
            "seconds": res.seconds,
            "rows_trained": res.rows_trained,
            "truncated_rows": res.truncated_rows,
            "dropped_no_loss": res.dropped_no_loss,
            "checkpoints": [str(p) for p in res.checkpoints],
            "log_history": res.log_history,
        },
    )
    return load_model(cfg.model, path_override=str(res.final_dir), seed=cfg.seed)


def _config_queries(cfg: RunConfig) -> list[Query]:
    """attribution.queries + attribution.queries_file, checked (see datablame.data.queries)."""
    return config_queries(cfg.attribution)


def _attribution_model(cfg: RunConfig, run_dir: Path) -> LoadedModel:
    if cfg.attribution.checkpoint:
        ck = Path(cfg.attribution.checkpoint)
        if not ck.exists():
            raise DatablameError(f"checkpoint {ck} does not exist", "fix attribution.checkpoint")
        return load_model(cfg.model, path_override=str(ck), seed=cfg.seed)
    final = _model_dir(run_dir) / "final"
    if final.is_dir():
        return load_model(cfg.model, path_override=str(final), seed=cfg.seed)
    if cfg.training.enabled:
        raise DatablameError(
            f"no trained model in {final}", "run `datablame train` (or `datablame run`) first"
        )
    if cfg.model.kind == "tiny":
        raise DatablameError("an untrained tiny model has nothing to attribute", "enable training")
    return load_model(cfg.model, seed=cfg.seed)


def _check_run_model_data(cfg: RunConfig, run_dir: Path, corpus: Corpus, loaded: LoadedModel | None) -> None:
    """The run's own model (final or one of its checkpoints) must have been trained on this
    data: otherwise attribution would blame rows it never saw (a model passed in is the caller's)."""
    ck = cfg.attribution.checkpoint
    if loaded is not None or (ck and not Path(ck).resolve().is_relative_to(_model_dir(run_dir).resolve())):
        return
    check_model_data(cfg, run_dir, corpus.fingerprint())


def evaluate_against_truth(
    corpus: Corpus, queries: list[Query], scores: dict[str, np.ndarray], truth: dict[str, list[str]], k: int
) -> dict:
    from datablame.bench.metrics import average_precision, mean_metric, recall_at_k

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


def prepare_inputs(
    cfg: RunConfig, *, corpus: Corpus | None = None, loaded: LoadedModel | None = None, queries: bool = True,
    use_store: bool = True,
) -> tuple[AttributionInputs, dict[str, list[str]]]:
    """Everything a method needs for this run (model, encoded rows and queries, checkpoints),
    plus the ground truth when the corpus is synthetic."""
    run_dir = prepare_run_dir(cfg)
    built_corpus, builtin_queries, truth = load_corpus(cfg)
    corpus = corpus or built_corpus
    queries = resolve_queries(cfg, builtin_queries) if queries else []  # none at all: refused here
    _check_run_model_data(cfg, run_dir, corpus, loaded)
    loaded = loaded or _attribution_model(cfg, run_dir)
    seed_everything(cfg.seed)
    if queries:
        prepared, q_enc = prepare_queries(
            loaded.model, loaded.tokenizer, queries,
            max_length=cfg.model.max_length, max_new_tokens=cfg.attribution.max_new_tokens, loss_on="completion",
        )
    else:  # indexing: rows only
        prepared, q_enc = [], Encoded([], [])
    rows_enc = encode_pairs(
        loaded.tokenizer, [r.prompt for r in corpus], [r.completion for r in corpus],
        max_length=cfg.model.max_length, loss_on=cfg.model.loss_on,
    )
    base = _model_dir(run_dir) / "base"
    inputs = AttributionInputs(
        model=loaded.model, tokenizer=loaded.tokenizer, corpus=corpus, rows=rows_enc,
        queries=prepared, query_rows=q_enc, attribution=cfg.attribution, model_cfg=cfg.model,
        work_dir=run_dir / "attribution",
        checkpoints=list_checkpoints(_model_dir(run_dir)),
        base_model=base if base.is_dir() else None,
        run_dir=run_dir,
        training=cfg.training,
    )
    inputs.cache["model_info"] = {"source": loaded.source, "fingerprint": loaded.fingerprint}
    inputs.cache["generated"] = [q.completion is None for q in queries]
    if use_store:
        _attach_store(cfg, inputs, loaded.fingerprint)
    return inputs, truth


def store_dir(run_dir: Path) -> Path:
    return run_dir / "store"


def _attach_store(cfg: RunConfig, inputs: AttributionInputs, model_fingerprint: str) -> None:
    """Use the run's feature store (from `datablame index`) for training-row gradients."""
    path = store_dir(inputs.run_dir)
    if not cfg.attribution.store.enabled or not (path / "manifest.json").is_file():
        return
    from datablame.store import open_store
    from datablame.store.manifest import read_manifest

    manifest = read_manifest(path)  # a corrupt manifest is a message naming it, not a traceback
    if manifest is None or not manifest.get("complete"):
        log.warning("feature store %s is incomplete; computing gradients directly "
                    "(rerun `datablame index` to finish it)", path)
        return
    try:
        store = open_store(path, expect_identity=store_identity(inputs, model_fingerprint))
    except DatablameError as err:
        raise DatablameError(
            f"{err.problem} (the run's model, data or projection changed since `datablame index`)",
            "rebuild it: `datablame index --config <run.yaml> --overwrite`, or set attribution.store.enabled: false",
        ) from None
    # every shard's sha256 is checked before any row is used (cached by file stamp in verified.json)
    store.verify(cached=True)
    inputs.cache["feature_store"] = store
    inputs.cache["store_row_losses"] = _load_row_losses(path, len(store))


def _load_row_losses(path: Path, n: int) -> np.ndarray:
    """Per-row losses saved by `datablame index` (NaN where absent); an unreadable file is a
    message naming it (they are not hashed: a method needing losses recomputes NaN ones)."""
    out = np.full(n, np.nan, dtype=np.float32)
    for f in (path / "row_losses").glob("*.npy"):
        try:
            start, stop = (int(x) for x in f.stem.split("-"))
            part = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError, SyntaxError) as e:
            raise DatablameError(f"{f} (row losses of the feature store) is unreadable ({type(e).__name__}: {e}).",
                                 f"delete {f.parent} and rerun `datablame index --config <run.yaml> --overwrite`.") from None
        if not 0 <= start < stop <= n or part.shape != (stop - start,):
            raise DatablameError(f"{f} (row losses of the feature store) holds {part.shape} values for rows {start}-{stop} of {n}.",
                                 f"delete {f.parent} and rerun `datablame index --config <run.yaml> --overwrite`.")
        out[start:stop] = part
    return out


def index(
    cfg: RunConfig, *, faiss: str = "auto", overwrite: bool = False, progress: bool = True, text_indices: bool = True,
) -> dict:
    """Featurize every training row once into `<run>/store` (resumable, sharded fp16) and
    build a FAISS index over it; later `attribute` calls read rows from the store. With
    `text_indices`, also build the retrieval cascade's BM25 and MiniLM embedding indices
    under `<run>/index/text` (reused when already built for this corpus and model)."""
    from datablame.store import build_faiss_index, build_store

    inputs, _ = prepare_inputs(cfg, queries=False, use_store=False)
    path = store_dir(inputs.run_dir)
    feat = featurizer_for(inputs)
    losses_dir = path / "row_losses"

    def featurize(start: int, stop: int):
        f, losses = featurize_range(inputs, start, stop)
        losses_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(losses_dir / f"{start}-{stop}.npy", losses.numpy())
        return f

    t0 = time.perf_counter()
    info = build_store(
        path, n_rows=len(inputs.corpus), row_ids=[r.row_id for r in inputs.corpus],
        identity=store_identity(inputs, inputs.cache["model_info"]["fingerprint"]),
        featurize=featurize, dim=feat.dim, shard_size=cfg.attribution.store.shard_rows,
        config=cfg.model_dump(mode="json"), progress=progress, overwrite=overwrite,
    )
    summary = {
        "store": str(path), "rows": info.n_rows, "dim": info.dim, "shards": info.n_shards,
        "shards_computed": info.shards_computed, "shards_reused": info.shards_reused,
        "featurize_s": info.seconds, "rows_per_s": info.rows_computed / info.seconds if info.seconds else None,
        "bytes": info.nbytes, "modules": inputs.cache["grad_modules"],
    }
    kind = faiss if faiss != "auto" else ("flat" if info.n_rows < 50_000 else "ivf")
    if kind != "none":
        from datablame.store import open_store

        store = open_store(path)
        idx = build_faiss_index(store, kind, metric="cosine", k=min(10, info.n_rows))
        idx.save(path / "faiss.index")
        summary["faiss"] = {k: v for k, v in idx.info.items() if k != "store_identity"}
    if text_indices:
        from datablame.retrieval.candidates import run_text_indices

        summary["text_indices"] = run_text_indices(inputs, progress=progress)[1]
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_json(path / "index_summary.json", summary)
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
    from datablame.curvature import factor_path
    from datablame.curvature.inspect import inspect_factors, resolve_module
    from datablame.methods.influence_common import fit_preconditioner

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
            f"{err.problem}; factors exist for the {len(names)} modules that attribution.modules selects "
            f"(pattern '{sel.pattern}', layers {sel.layers or 'all'}): {', '.join(names)}",
            "pass --layer with one of those names (or a unique suffix such as 'layers.0.mlp.down_proj'), "
            "or widen attribution.modules.pattern to include the layer",
        ) from None
    pre = fit_preconditioner(inputs, kind, fisher=method.fisher, fit_rows=method.fit_rows, seed=method.seed,
                             reuse=method.reuse)
    paths = inspect_factors(pre, module, Path(out_dir) if out_dir else inputs.run_dir / "inspect", kind=kind,
                            damping=method.damping if damping is None else damping, damping_scale=method.damping_scale)
    paths["factors"] = factor_path(inputs.work_dir, kind)
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
    `retrieval_recall`: None = report recall when the feature store makes it cheap)."""
    methods = methods or cfg.attribution.method_names()
    for name in methods:  # fail on a typo or a bad option before any model is loaded
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
    if cascade_on:
        from datablame.retrieval.candidates import attribute_with_cascade, run_text_indices

        r = cfg.attribution.retrieval
        t = time.perf_counter()
        indices, index_info = run_text_indices(inputs, bm25=r.bm25_k is not None, embedding=r.embedding_k is not None,
                                               progress=progress)
        timing["text_indices_s"] = time.perf_counter() - t
        ms = [get_method(name, **cfg.attribution.options.get(name, {})) for name in methods]
        done = attribute_with_cascade(inputs, ms, indices=indices, index_info=index_info, evaluate=retrieval_recall,
                                      progress=progress)
        scores, described, retrieval = done.scores, done.methods, done.report
        timing.update(done.timing)
    else:
        for name in methods:
            m = get_method(name, **cfg.attribution.options.get(name, {}))
            t = time.perf_counter()
            m.fit(inputs)
            scores[name] = m.score(inputs)
            timing[f"{name}_s"] = time.perf_counter() - t
            described.append(m.describe())
    result = build_result(
        version=__version__,
        config=cfg.model_dump(mode="json"),
        model_info={**inputs.cache["model_info"], "modules": inputs.cache.get("grad_modules", [])},
        corpus=inputs.corpus, queries=inputs.queries, generated=inputs.cache["generated"],
        scores=scores, methods=described, k=cfg.attribution.top_k, timing=timing,
    )
    result.data["truncated_rows"] = len(inputs.rows.truncated)
    if retrieval is not None:
        from datablame.retrieval.candidates import drop_unranked

        drop_unranked(result)  # rows outside a query's cascade candidates have no rank
        result.retrieval = retrieval
    if truth:
        result.evaluation = evaluate_against_truth(inputs.corpus, inputs.queries, scores, truth, cfg.attribution.top_k)
    return result, _write_outputs(cfg, inputs, result, scores)


def _write_outputs(cfg: RunConfig, inputs: AttributionInputs, result: AttributionResult,
                   scores: dict[str, np.ndarray]) -> dict[str, Path]:
    """results.json (with the data, model and store it came from), md, html, scores.npz and the
    comparison: all written before the previous result moves to `attribution/history/<time>/`."""
    from datablame.report.history import publish_results, store_provenance
    from datablame.runs import trained_data_fingerprint

    if not cfg.attribution.checkpoint and inputs.run_dir is not None:
        result.model["trained_on_data"] = trained_data_fingerprint(inputs.run_dir)
    store = inputs.cache.get("feature_store")
    result.data["store"] = store_provenance(store) if store is not None else None

    def write(staging: Path) -> dict[str, Path]:
        paths = write_result(result, staging)
        paths["scores"] = atomic_save_npz(staging / "scores.npz", scores)
        if len(scores) > 1:
            from datablame.report.compare import write_comparison

            paths.update(write_comparison(scores, cfg.attribution.top_k, staging))
        return paths

    paths, previous = publish_results(inputs.run_dir / "attribution", write)
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
