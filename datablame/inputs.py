"""The run's inputs: its corpus, its trained model, and everything a method needs.

`load_corpus`, `train` and `prepare_inputs` sit below every stage that needs them (verify,
lds, bench and `datablame.api`, which re-exports them), so none of those imports upward.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from datablame.config import RunConfig
from datablame.data import build_corpus, make_planted
from datablame.data.corpus import Corpus, Query
from datablame.data.queries import resolve_queries
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext, ModelInfo
from datablame.layout import RunLayout
from datablame.models import load_model
from datablame.models.loading import LoadedModel, save_model
from datablame.models.queries import behaviour_measure, context_limit, prepare_queries
from datablame.models.tokenize import Encoded, encode_pairs
from datablame.runs import check_model_data, prepare_run_dir, record_training_data
from datablame.train import finetune
from datablame.utils.io import atomic_write_json, seed_everything

log = logging.getLogger("datablame")


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


def train(cfg: RunConfig, corpus: Corpus | None = None) -> LoadedModel:
    """Fine-tune (or reuse the finished fine-tune of this run directory) and return the model.

    The model, its checkpoints and (tiny models) its base are tied to the data they were
    trained on (`<run>/model/fingerprint.json`): when the data changed since, the run is
    refused (or moved aside with `output.overwrite: true`), never reused or resumed."""
    corpus = corpus or load_corpus(cfg)[0]
    data_fp = corpus.fingerprint()
    run_dir = prepare_run_dir(cfg, data_fingerprint=data_fp)
    layout = RunLayout(run_dir)
    final = layout.final_model
    if final.is_dir():
        log.info("reusing trained model %s", final)
        return load_model(cfg.model, path_override=str(final), seed=cfg.seed)
    record_training_data(run_dir, cfg, data_fp, len(corpus))  # before any checkpoint exists
    seed_everything(cfg.seed)
    base = load_model(cfg.model, tokenizer_texts=[r.text for r in corpus], seed=cfg.seed)
    check_module_selection(base.model, cfg)  # a selection that cannot work fails before training, not after
    if cfg.model.kind == "tiny":
        # a random base only exists in memory: save it so checkpoints/adapters can refer to it
        base_dir = layout.base_model
        if not base_dir.is_dir():
            save_model(base.model, base.tokenizer, base_dir)
        base = load_model(cfg.model, path_override=str(base_dir), seed=cfg.seed)
    res = finetune(base.model, base.tokenizer, corpus, cfg.training, cfg.model, layout.model_dir)
    atomic_write_json(
        layout.train_summary,
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


def check_module_selection(model, cfg: RunConfig) -> list[str]:
    """Resolve `attribution.modules` on the base model (before any training) when a configured
    method uses gradient features: no match, or a tied weight, is an error now; returns the names.
    `lora_only` selections are checked after LoRA wrapping (the adapter does not exist yet)."""
    from datablame.grads.modules import select_modules
    from datablame.methods.base import REGISTRY

    uses_grads = any(getattr(REGISTRY.get(n), "family", None) in ("gradient", "influence")
                     for n in cfg.attribution.method_names())
    if not uses_grads or cfg.attribution.modules.lora_only:
        return []
    return [n for n, _ in select_modules(model, cfg.attribution.modules)]


def _attribution_model(cfg: RunConfig, run_dir: Path) -> LoadedModel:
    if cfg.attribution.checkpoint:
        ck = Path(cfg.attribution.checkpoint)
        if not ck.exists():
            raise DatablameError(f"checkpoint {ck} does not exist", "fix attribution.checkpoint")
        return load_model(cfg.model, path_override=str(ck), seed=cfg.seed)
    final = RunLayout(run_dir).final_model
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
    if loaded is not None or (ck and not Path(ck).resolve().is_relative_to(RunLayout(run_dir).model_dir.resolve())):
        return
    check_model_data(cfg, run_dir, corpus.fingerprint())


def prepare_inputs(
    cfg: RunConfig, *, corpus: Corpus | None = None, loaded: LoadedModel | None = None, queries: bool = True,
    use_store: bool = True,
) -> tuple[AttributionContext, dict[str, list[str]]]:
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
    layout = RunLayout(run_dir)
    base = layout.base_model
    inputs = AttributionContext(
        model=loaded.model, tokenizer=loaded.tokenizer, corpus=corpus, rows=rows_enc,
        queries=prepared, query_rows=q_enc, attribution=cfg.attribution, model_cfg=cfg.model,
        work_dir=layout.attribution_dir,
        checkpoints=layout.checkpoints(),
        base_model=base if base.is_dir() else None,
        run_dir=run_dir,
        training=cfg.training,
        model_info=ModelInfo(source=loaded.source, fingerprint=loaded.fingerprint),
        generated=[q.completion is None for q in queries],
        query_measure=behaviour_measure(loaded.tokenizer, prepared, limit=context_limit(loaded.model, cfg.model.max_length))
        if queries else None,
    )
    if use_store:
        _attach_store(cfg, inputs, loaded.fingerprint)
    return inputs, truth


def store_dir(run_dir: Path) -> Path:
    return RunLayout(run_dir).store_dir


def _attach_store(cfg: RunConfig, inputs: AttributionContext, model_fingerprint: str) -> None:
    """Use the run's feature store (from `datablame index`) for training-row gradients."""
    path = store_dir(inputs.run_dir)
    from datablame.store.manifest import has_manifest, read_manifest

    if not cfg.attribution.store.enabled or not has_manifest(path):
        return
    from datablame.store import open_store

    manifest = read_manifest(path)  # a corrupt manifest is a message naming it, not a traceback
    if manifest is None or not manifest.get("complete"):
        log.warning("feature store %s is incomplete; computing gradients directly "
                    "(rerun `datablame index` to finish it)", path)
        return
    try:
        store = open_store(path, expect_identity=inputs.identity(model_fingerprint).store())
    except DatablameError as err:
        raise DatablameError(
            f"{err.problem} (the run's model, data or projection changed since `datablame index`)",
            "rebuild it: `datablame index --config <run.yaml> --overwrite`, or set attribution.store.enabled: false",
        ) from None
    # every shard's sha256 is checked before any row is used (cached by file stamp in verified.json)
    store.verify(cached=True)
    inputs.store = store
    inputs.store_row_losses = _load_row_losses(RunLayout(inputs.run_dir).store_row_losses_dir, len(store))


def _load_row_losses(losses_dir: Path, n: int) -> np.ndarray:
    """Per-row losses saved by `datablame index` (NaN where absent); an unreadable file is a
    message naming it (they are not hashed: a method needing losses recomputes NaN ones)."""
    out = np.full(n, np.nan, dtype=np.float32)
    for f in losses_dir.glob("*.npy"):
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
