"""bergson peer (EleutherAI, 2.5.1): its build path for the queries and its score path for
the training rows, on our trained model, rows and queries.

What runs is what `bergson build` + `bergson score` run, called in-process so time and
memory are measured like our methods:

1. build: `bergson.collect_gradients` over the encoded queries writes a query gradient
   index (per-module random projection `projection_dim x projection_dim`, loss reduced by
   the mean over completion tokens, like ours);
2. score: `bergson.score.score.create_scorer` loads that index and
   `collect_gradients(..., scorer=...)` streams over the training rows, scoring each batch
   against the queries (`score="individual"`), written to bergson's `scores.bin`, read
   back with `bergson.data.load_scores`.

Modules: the same MLP linear layers our gradient methods use (`attribution.modules`), so
both sides see the same parameters. Score: with `unit_normalize=True` (default) the cosine
of projected loss gradients (bergson normalises query and row gradients), otherwise their
inner product; unitless either way, higher = the row's gradient points like the query's,
i.e. a step on the row lowers the query loss (our sign). No Hessian preconditioning
(bergson's EK-FAC path needs unprojected gradients; `kronfluence` is the EK-FAC peer).

Options (`--peer-option bergson.<key>=<value>`): projection_dim (default: the run's
`attribution.projection.k_in`, else 32), unit_normalize (true), batch_size (rows per batch,
default `attribution.batch_size`).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
import torch

from datablame.bench.peers import Peer, register_peer
from datablame.features.context import AttributionContext
from datablame.grads import select_modules
from datablame.layout import AttributionLayout
from datablame.models.tokenize import Encoded


def _dataset(enc: Encoded):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": enc.input_ids, "labels": enc.labels,
                              "length": [len(r) for r in enc.input_ids]})


def _batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


@register_peer
class BergsonPeer(Peer):
    name = "bergson"
    library = "bergson"
    entry_point = "collect_gradients (build, queries) + create_scorer/collect_gradients(scorer=) (score, rows)"
    reference = "grad_cosine"

    def __init__(self, projection_dim: int | None = None, unit_normalize: bool = True,
                 batch_size: int | None = None) -> None:
        super().__init__(projection_dim=projection_dim, unit_normalize=unit_normalize, batch_size=batch_size)
        self.reference = "grad_cosine" if unit_normalize else "grad_dot"

    def scores(self, inputs: AttributionContext) -> np.ndarray:
        from bergson import (
            GradientProcessor,
            IndexConfig,
            PreprocessConfig,
            ScoreConfig,
            collect_gradients,
        )
        from bergson.data import load_scores
        from bergson.score.score import create_scorer

        opts = self.options
        k = opts["projection_dim"] or inputs.attribution.projection.k_in or 32
        batch = opts["batch_size"] or inputs.attribution.batch_size
        opts.update(projection_dim=k, batch_size=batch)
        model = inputs.model
        targets = {n.removeprefix("model.") for n, _ in select_modules(model, inputs.attribution.modules)}
        root = AttributionLayout(inputs.work_dir or ".").cache_dir("peers") / "bergson"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)

        def index_cfg(name: str):
            return IndexConfig(run_path=str(root / name), projection_dim=k, projection_type="normal",
                               loss_reduction="mean", loss_fn="ce")

        def processor():
            return GradientProcessor(projection_dim=k, projection_type="normal")

        # as bergson's setup_model_and_peft leaves the model: eval, only the input embedding
        # requires grad (so backward reaches every hooked module); run_peer restores it
        model.eval()
        model.requires_grad_(False)
        model.get_input_embeddings().requires_grad_(True)
        device = next(model.parameters()).device

        queries = _dataset(inputs.query_rows)
        qcfg = index_cfg("query")
        collect_gradients(model, queries, processor(), qcfg, batches=_batches(len(queries), batch),
                          target_modules=targets)
        os.replace(qcfg.partial_run_path, qcfg.run_path)  # what `bergson build` does at the end

        rows = _dataset(inputs.rows)
        rcfg = index_cfg("scores")
        rcfg.partial_run_path.mkdir(parents=True, exist_ok=True)
        scorer = create_scorer(rcfg.partial_run_path, rows,
                               ScoreConfig(query_path=str(qcfg.run_path), score="individual", precision="fp32"),
                               PreprocessConfig(unit_normalize=bool(opts["unit_normalize"])),
                               device=device, dtype=torch.float32)
        collect_gradients(model, rows, processor(), rcfg, batches=_batches(len(rows), batch),
                          target_modules=targets, scorer=scorer)
        scorer.writer.flush()
        stored = load_scores(rcfg.partial_run_path)
        if not stored.is_written():
            raise RuntimeError("bergson left score cells unwritten")
        out = np.asarray(stored[:], dtype=np.float64).T  # [rows, queries] -> [queries, rows]
        del stored
        return out

    def settings(self) -> dict[str, Any]:
        return {**self.options, "projection_type": "normal", "loss_reduction": "mean", "precision": "fp32",
                "score": "individual", "preconditioner": None}
