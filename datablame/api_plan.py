"""`datablame plan --config run.yaml`: before a run, per-stage peak memory and time on the chosen
device, store size and query latency, and the settings that fit a memory budget.

The corpus is loaded and tokenized (its real token counts drive the estimate), the model's shape
is read on the meta device (`datablame.plan.shapes`, nothing downloaded), the device is
calibrated for a few seconds (`datablame.plan.calibrate`) and the arithmetic of
`datablame.plan.costs` turns shape x workload x calibration into bytes and seconds.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from datablame.config import RunConfig
from datablame.errors import DatablameError
from datablame.plan.costs import Workload, parse_bytes
from datablame.plan.planner import estimate, format_plan, recommend, to_shape  # noqa: F401 (format_plan re-exported)

FRESH_PROCESS_S = 120.0  # an older process (a notebook, a test run) measures its start in a child instead
INFLUENCE = ("ekfac", "kfac", "diag_influence")


def _startup_s() -> float:
    from datablame.plan.calibrate import process_age_s

    age = process_age_s()
    if 0 < age < FRESH_PROCESS_S:
        return age
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import datablame.cli, datablame.api; from transformers import Trainer"],
                   check=False, capture_output=True)
    return time.perf_counter() - t0


def _tokenizer(cfg: RunConfig, texts: list[str]):
    """The tokenizer the run will use, without a model: tiny trains its own on the corpus."""
    if cfg.model.kind == "tiny":
        from datablame.models.tiny import train_tokenizer

        tok = train_tokenizer(texts, cfg.model.tiny.vocab_size, cfg.model.tiny.extra_tokens)
    else:
        from transformers import AutoTokenizer

        if cfg.model.kind == "smollm2-gguf":
            from datablame.models.gguf import cached_model_dir

            where = str(cached_model_dir(cfg.model.cache_dir))
        else:
            where = str(cfg.model.tokenizer or cfg.model.name_or_path)
        try:
            tok = AutoTokenizer.from_pretrained(where, trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise DatablameError(f"plan needs the run's tokenizer, but {where} has none at hand "
                                 f"({str(err).splitlines()[0][:160]})",
                                 "point model.tokenizer (or model.name_or_path) at a local directory") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def padded_tokens(lengths: list[int], batch: int, order: np.ndarray | None = None) -> int:
    """Tokens of the batches as run: each batch padded to its longest row."""
    arr = np.asarray(lengths if order is None else [lengths[i] for i in order], dtype=np.int64)
    return int(sum(len(arr[i : i + batch]) * arr[i : i + batch].max() for i in range(0, len(arr), batch)))


def workload(cfg: RunConfig, lengths: list[int], trainable: int, query_lengths: list[int],
             completion_tokens: int, row_id_bytes: int) -> Workload:
    """The run's work in rows, steps and padded tokens (training batches in a seeded random order)."""
    from datablame.train.finetune import planned_steps

    t, a = cfg.training, cfg.attribution
    steps = planned_steps(t, trainable) if t.enabled else 0
    per_epoch = padded_tokens(lengths[:trainable], t.per_device_train_batch_size,
                              np.random.default_rng(t.seed).permutation(trainable))
    batches = max(1, math.ceil(trainable / t.per_device_train_batch_size))
    methods = a.method_names()
    feat = padded_tokens(lengths, a.batch_size)
    faiss = "flat" if len(lengths) < 50_000 else "ivf"
    return Workload(
        rows=len(lengths), queries=len(query_lengths), train_steps=steps, train_batch=t.per_device_train_batch_size,
        train_tokens_per_step=per_epoch / batches * t.gradient_accumulation_steps, train_max_tokens=max(lengths),
        feat_batch=a.batch_size, feat_tokens=feat, query_tokens=padded_tokens(query_lengths, a.batch_size) if query_lengths else 0,
        completion_tokens=completion_tokens, checkpoint_saves=steps // t.save_steps if steps else 0,
        tiny=cfg.model.kind == "tiny", shard_rows=a.store.shard_rows, store_bytes=2 if a.store.dtype == "float16" else 4,
        faiss=faiss, methods=len(methods), fit_rows_tokens=feat if any(m in INFLUENCE for m in methods) else 0,
        id_bytes=row_id_bytes, checkpointing=cfg.model.gradient_checkpointing,
    )


def plan(cfg: RunConfig, *, config_name: str = "run.yaml", memory_budget: str | int | None = None,
         device: str | None = None, calibrate: bool = True) -> dict[str, Any]:
    """The plan as a dict (`format_plan` prints it): stages, store, query, recommendation."""
    import torch
    from transformers import Trainer  # noqa: F401 (the stages import it: part of the measured runtime)

    from datablame.data.queries import resolve_queries
    from datablame.inputs import load_corpus
    from datablame.models.loading import _resolve_dtype
    from datablame.models.tokenize import encode_pairs
    from datablame.plan import calibrate as cal
    from datablame.plan.shapes import model_shape

    budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else memory_budget
    base_bytes = cal.rss_bytes()
    startup = _startup_s() if calibrate else 0.0
    dev = device or cfg.model.device
    if dev not in ("auto", "cpu") and not dev.startswith("cuda"):
        raise DatablameError(f"--device {dev!r} is not a device plan knows", "use --device cpu or --device cuda")
    on_gpu = torch.cuda.is_available() if dev == "auto" else dev.startswith("cuda")
    dev_name = "cuda" if on_gpu else "cpu"
    dtype = str(_resolve_dtype(cfg.model.dtype, torch.device("cuda" if on_gpu and torch.cuda.is_available() else "cpu")))
    dtype = dtype.removeprefix("torch.")
    if cfg.model.dtype == "auto" and on_gpu:
        dtype = "bfloat16"

    t0 = time.perf_counter()
    corpus, builtin, _ = load_corpus(cfg)
    if not len(corpus):
        raise DatablameError("the corpus has no rows: nothing to plan", "check data.* in the config")
    queries = resolve_queries(cfg, builtin)
    tok = _tokenizer(cfg, [r.text for r in corpus])
    enc = encode_pairs(tok, [r.prompt for r in corpus], [r.completion for r in corpus],
                       max_length=cfg.model.max_length, loss_on=cfg.model.loss_on)
    prep_s = time.perf_counter() - t0
    lengths = [len(x) for x in enc.input_ids]
    no_loss = set(enc.no_loss)
    trainable = len(lengths) - len(no_loss)
    q_comp = [q.completion or "x" for q in queries]
    q_enc = encode_pairs(tok, [q.prompt for q in queries], q_comp, max_length=cfg.model.max_length, loss_on="completion")
    q_lengths = [len(x) + (0 if q.completion else cfg.attribution.max_new_tokens) for x, q in zip(q_enc.input_ids, queries, strict=True)]
    completion = sum(sum(1 for y in lab if y != -100) if q.completion else cfg.attribution.max_new_tokens
                     for lab, q in zip(q_enc.labels, queries, strict=True))
    w = workload(cfg, lengths, trainable, q_lengths, completion, int(np.mean([len(r.row_id) for r in corpus])))
    ms = model_shape(cfg.model, cfg.attribution.modules, vocab_size=len(tok) if cfg.model.kind == "tiny" else None)
    if not ms.modules:
        raise DatablameError("attribution.modules selects no module of this model", "fix attribution.modules")
    shape = to_shape(ms, cfg.attribution.projection)
    cal_batch = cfg.attribution.batch_size
    cal_tokens = max(1, round(w.feat_tokens / max(len(lengths), 1)))
    if on_gpu and not torch.cuda.is_available():
        c = cal.assumed_gpu(shape, dtype=dtype, tokens=cal_tokens, startup_s=startup, prep_s=prep_s)
    elif calibrate:
        c = cal.measure(shape, ms.config, cfg.model, cfg.attribution.modules, cfg.attribution.projection, tok,
                        device=dev_name if dev == "auto" else dev, dtype=dtype, batch=cal_batch, tokens=cal_tokens,
                        base_bytes=base_bytes, startup_s=startup, prep_s=prep_s)
    else:  # arithmetic only (tests): unit rates, every time figure is then a count of work
        from datablame.plan.costs import Calibration

        c = Calibration(dev_name, "none", dtype, base_bytes, startup, prep_s, 1e-4, 1e-4, 3e-5, 1e-3, 0.0, 1e9, 1e9,
                        1e9, 1e10, ["not calibrated: unit rates"])
    tpq = (w.query_tokens / max(w.queries, 1)) if w.queries else cal_tokens
    est = estimate(ms, cfg.attribution.projection, w, c, dtype, tpq)
    out: dict[str, Any] = {
        "config": config_name, "device": c.device, "dtype": dtype, "model": ms.as_dict(),
        "projection": {"k_in": cfg.attribution.projection.k_in, "k_out": cfg.attribution.projection.k_out},
        "workload": vars(w), "calibration": c.as_dict(), **est,
        "notes": ["times are wall seconds of each stage's command on this machine at the calibration's load; "
                  "train runs `datablame train`, featurize `datablame index`, scores `datablame attribute`"],
    }
    if budget is not None:
        out["recommendation"] = recommend(ms, cfg.attribution.projection, w, c, dtype, budget, tpq)
    return out


def plan_from_file(path: str | Path, **kw: Any) -> dict[str, Any]:
    from datablame.api import load_config

    return plan(load_config(path), config_name=str(path), **kw)
