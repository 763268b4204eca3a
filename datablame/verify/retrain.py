"""One retraining job: a fresh model from the run's initial weights, trained on a modified
training set with the run's hyper-parameters, then measured on the queries.

A job is pure data (`RetrainJob`: training seed, rows left out, rows whose completion is
corrupted), so it can be shipped to a Ray worker, and its key (`job_key`) hashes everything
that decides the outcome -- the run's data/model/training settings, the corpus, the queries
and what is measured, the seed and the modification -- and nothing else (not which
experiment asked for it). Two experiments that need the same retraining (the baseline of
seed 3, say) therefore share one result file, and a rerun finds it done.

Same init: tiny models start from <run>/model/base (saved by `datablame train`), Hugging
Face models from the configured weights. Same data order: `finetune` seeds Trainer's sampler
with the training seed. Measured per query: the mean next-token NLL of the completion
tokens (`loss`, nats/token, what methods attribute), their summed log-probability
(`logprob`, nats), the number of completion tokens, and the greedy generation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datablame.errors import DatablameError

JOB_FORMAT = 1  # bump when the meaning of a job record changes (invalidates cached jobs)


@dataclass(frozen=True)
class RetrainJob:
    """What to change in the training set, and the training seed (data order).

    `removed`: row indices left out. `flipped`: (row, donor) pairs; the row keeps its prompt
    and takes the completion of row `donor` (or the context's `flip_text` when donor is -1).
    `kind` and `tags` describe why the job exists; they are not part of its key.
    """

    seed: int
    removed: tuple[int, ...] = ()
    flipped: tuple[tuple[int, int], ...] = ()
    kind: str = "baseline"
    tags: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class RetrainContext:
    """What every job of a sweep shares (small and picklable: shipped once to each worker)."""

    config: dict[str, Any]  # RunConfig.model_dump(mode="json")
    run_dir: str
    base_model: str | None  # initial weights (<run>/model/base), None: the configured model
    corpus_fingerprint: str
    n_rows: int
    queries: tuple[tuple[str, str, str], ...]  # (query_id, prompt, completion)
    generate: bool = True
    max_new_tokens: int = 32
    epochs: float | None = None  # None: training.num_train_epochs
    flip_text: str = "CORRUPTED DATA - IGNORE THIS"
    # behaviour-level queries: (query index, completion, weight) of every member completion; a
    # query's measured loss is the weighted sum of its members' losses (empty: each query's own)
    members: tuple[tuple[int, str, float], ...] = ()

    @property
    def query_ids(self) -> list[str]:
        return [q[0] for q in self.queries]

    def queries_hash(self) -> str:
        payload = [self.queries, self.members] if self.members else self.queries  # old job keys stay valid
        h = hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode())
        return h.hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """Everything besides the job that decides a job's result."""
        from datablame.config import parse_config
        from datablame.runs import full_run_key

        return {
            "format": JOB_FORMAT,
            "run_key": full_run_key(parse_config(self.config)),
            "corpus": self.corpus_fingerprint,
            "queries": self.queries_hash(),
            "generate": self.generate,
            "max_new_tokens": self.max_new_tokens if self.generate else None,
            "epochs": self.epochs,
        }


def job_key(ctx: RetrainContext, job: RetrainJob, identity: dict[str, Any] | None = None) -> str:
    """Content hash of a job: equal keys = the same retraining and measurement."""
    payload = {
        "ctx": identity or ctx.identity(),
        "seed": job.seed,
        "removed": sorted(set(job.removed)),
        "flipped": sorted(set(job.flipped)),
        "flip_text": ctx.flip_text if any(d < 0 for _, d in job.flipped) else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def pack_mask(mask: np.ndarray) -> str:
    """A boolean row mask as base64 of its packed bits (one bit per row)."""
    return base64.b64encode(np.packbits(np.asarray(mask, dtype=bool)).tobytes()).decode("ascii")


def unpack_mask(text: str, n_rows: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    return bits[:n_rows].astype(bool)


# --- inside a worker ---------------------------------------------------------------

_CORPUS_CACHE: dict[str, Any] = {}


def _corpus(cfg) -> Any:
    """The run's corpus, built once per worker process (workers run many jobs)."""
    from datablame.inputs import load_corpus

    key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
    if key not in _CORPUS_CACHE:
        _CORPUS_CACHE.clear()
        _CORPUS_CACHE[key] = load_corpus(cfg)[0]
    return _CORPUS_CACHE[key]


def _modified_corpus(corpus, job: RetrainJob, flip_text: str):
    from datablame.data.corpus import Corpus, Row

    if not job.flipped:
        return corpus
    rows = list(corpus.rows)
    for r, donor in job.flipped:
        new = flip_text if donor < 0 else corpus[donor].completion
        old = rows[r]
        rows[r] = Row(old.row_id, old.prompt, new, dict(old.metadata))
    return Corpus(rows, name=f"{corpus.name}[flipped]", report=corpus.report)


def _initial_model(cfg, base_model: str | None):
    from datablame.models import load_model

    if base_model:
        return load_model(cfg.model, path_override=base_model, seed=cfg.seed)
    if cfg.model.kind == "tiny":
        raise DatablameError(
            "a tiny model's initial weights are saved by training, and this run has none",
            "run `datablame train --config ...` first (it writes <run>/model/base)",
        )
    return load_model(cfg.model, seed=cfg.seed)


def behaviour_members(queries: Sequence[Any]) -> tuple[tuple[int, str, float], ...]:
    """The member completions of behaviour-level queries with their weights, as attribution
    measures them (`datablame.models.queries.behaviour_members`); () when no query has any."""
    from datablame.models.queries import behaviour_members as weighted

    return tuple((qi, text, weight) for qi, _, text, weight in weighted(queries))


def measure_queries(
    model, tokenizer, queries: Sequence[tuple[str, str, str]], *, generate: bool, max_new_tokens: int,
    batch_size: int = 16, members: Sequence[tuple[int, str, float]] = (),
) -> dict[str, list]:
    """Per query: completion loss (mean NLL, nats/token), summed log-prob, token count and
    greedy generation, with the same encoding as attribution (completion-only loss, no eos).
    With `members` (behaviour-level queries), `loss` is each query's measured loss, the
    weighted sum of its member completions' losses (kept in `member_loss`)."""
    if members:
        pairs = [(queries[qi][0], queries[qi][1], text) for qi, text, _ in members]
        each = measure_queries(model, tokenizer, pairs, generate=False, max_new_tokens=0, batch_size=batch_size)
        out = measure_queries(model, tokenizer, queries, generate=generate, max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
        measured = [0.0] * len(queries)
        for (qi, _, weight), loss in zip(members, each["loss"], strict=True):
            measured[qi] += weight * loss
        return {**out, "loss": measured, "member_loss": each["loss"]}
    import torch

    from datablame.models.queries import generate_completions
    from datablame.models.tokenize import IGNORE, encode_pairs, pad_batch, per_row_loss

    enc = encode_pairs(
        tokenizer, [q[1] for q in queries], [q[2] for q in queries],
        max_length=10**9, loss_on="completion", add_eos=False,
    )
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    losses, tokens = [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(enc), batch_size):
            batch = pad_batch(enc.input_ids[s : s + batch_size], enc.labels[s : s + batch_size], pad)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses += per_row_loss(logits, batch["labels"]).tolist()
            tokens += (batch["labels"][:, 1:] != IGNORE).sum(dim=1).tolist()
    out: dict[str, list] = {
        "loss": [float(x) for x in losses],
        "logprob": [float(-x * n) for x, n in zip(losses, tokens, strict=True)],
        "tokens": [int(n) for n in tokens],
    }
    if generate:
        out["generation"] = generate_completions(model, tokenizer, [q[1] for q in queries], max_new_tokens)
    return out


def execute(ctx: RetrainContext, job: RetrainJob, *, threads: int | None = None) -> dict[str, Any]:
    """Train one model for `job` and measure the queries; returns the job record."""
    import torch
    import transformers

    from datablame.config import parse_config
    from datablame.train import finetune
    from datablame.utils.io import seed_everything

    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.logging.set_verbosity_error()
    cfg = parse_config(ctx.config, "<retrain>")
    corpus = _corpus(cfg)
    if corpus.fingerprint() != ctx.corpus_fingerprint:
        raise DatablameError(
            "the corpus built on this worker differs from the one the sweep was planned on",
            "make the data files readable at the same path on every Ray node",
        )
    removed = set(job.removed)
    keep = [i for i in range(len(corpus)) if i not in removed]
    train_cfg = cfg.training.model_copy(update={
        "seed": job.seed, "resume": False, "report_to": [],
        # no intermediate checkpoints or logs: only the final weights matter here
        "save_steps": 10**9, "logging_steps": 10**9, "save_total_limit": None,
        **({"num_train_epochs": ctx.epochs} if ctx.epochs else {}),
    })
    seed_everything(job.seed)
    loaded = _initial_model(cfg, ctx.base_model)
    # the model is measured in memory; Trainer's files go to a local temporary directory
    # (on the worker's node), removed afterwards
    out_dir = Path(tempfile.mkdtemp(prefix="datablame-retrain-"))
    try:
        res = finetune(
            loaded.model, loaded.tokenizer, _modified_corpus(corpus, job, ctx.flip_text), train_cfg,
            cfg.model, out_dir, indices=keep, show_progress=False,
        )
        measured = measure_queries(
            res.model, loaded.tokenizer, ctx.queries, generate=ctx.generate, max_new_tokens=ctx.max_new_tokens,
            members=ctx.members,
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    kept = np.ones(ctx.n_rows, dtype=bool)
    kept[list(removed)] = False
    return {  # the driver adds "key" and "identity" (computed once, with its own code)
        "kind": job.kind,
        "tags": dict(job.tags),
        "seed": job.seed,
        "n_rows": ctx.n_rows,
        "n_removed": len(removed),
        "kept_mask": pack_mask(kept),
        "flipped": [list(p) for p in sorted(set(job.flipped))],
        "corpus": ctx.corpus_fingerprint,
        "query_ids": ctx.query_ids,
        **measured,
        "rows_trained": res.rows_trained,
        "train_seconds": res.seconds,
        "seconds": time.perf_counter() - t0,
        "host": socket.gethostname(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def job_summary(job: RetrainJob) -> dict[str, Any]:
    """A job as plain data (for plans and error messages)."""
    d = asdict(job)
    d["removed"] = len(job.removed)
    d["flipped"] = len(job.flipped)
    return d
