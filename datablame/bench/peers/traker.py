"""traker peer (MadryLab TRAK, 0.3.2): `TRAKer` on our model, rows, queries and loss.

What runs is the library's own pipeline, in-process: per ensemble member (the run's
checkpoints, or independently trained models) `load_checkpoint` + `featurize` over the
training rows, `finalize_features` (Φ(ΦᵀΦ + λI)⁻¹), then `start_scoring_checkpoint` +
`score` over the queries, and `finalize_scores` (scores averaged over members times the
averaged out-to-loss term). On CPU traker uses its `BasicProjector` (dense Gaussian JL
projection of the full gradient of the selected weights); `proj_dim` must be >= 200
(ENVIRONMENT.md: <= 100 fails when scoring). Float32 throughout (`use_half_precision`
off: float16 on CPU loses the small kernel eigenvalues).

Model output = our `trak` method's (datablame/methods/trak.py): with ℓ the mean
completion-token NLL of a row (our training loss, answer-only mask) and p̄ = exp(-ℓ),
`margin` is f = log(p̄/(1-p̄)) with out-to-loss term Q = 1 - p̄, `logprob` is f = -ℓ with
Q = 1. Gradients are taken w.r.t. the weights of the run's selected modules
(`attribution.modules`, `grad_wrt`), per example with `torch.func` (vmap over rows; the
attention mask is left out, which is exact for right-padded rows under causal attention).

Damping: traker's `lambda_reg` is absolute, on its own scale (gradients divided by
sqrt(#params) and projected); it is set per member to `damping` x trace(ΦᵀΦ)/min(n, k)
of that member's traker features, the same relative rule as our `trak`.

Known differences from our `trak` (beyond the random projection itself): traker rescales
each member's (ΦᵀΦ + λI)⁻¹ by its mean absolute entry before averaging, so ensemble
members are weighted differently (one member: no effect on rankings); it projects the
full gradient densely, we project factored per module (P_out G P_inᵀ).

Agreement measured (benchmarks/trak_vs_traker.py -> benchmarks/results/trak_vs_traker.json;
planted test run: 55 rows, 3 queries, damping 0.01 unless said), Spearman over the score
matrix: exact gradients of one module, last checkpoint 0.9999 (the formulations match);
8-checkpoint ensemble 0.987 (traker's per-member kernel rescaling above). Projected, six
modules: ours 32x32 per module vs traker proj_dim 1024: 0.78, vs 4096: 0.88 (0.91 at damping
1). That gap is projection noise, not formulation: each side agrees better with the exact
TRAK than with the other (traker 1024 / 4096: 0.85 / 0.97; ours 32x32: 0.91), and both
errors grow because n (55) < D and the kernel inverts the small-eigenvalue directions where
JL noise is largest (every figure rises with damping). `tests/bench/test_peer_traker.py`
asserts the exact comparison (>= 0.99).

Options (`--peer-option traker.<key>=<value>`): checkpoints ("all" | "last" | N | steps),
models (model directories, instead of checkpoints), proj_dim (default 1024), output
("margin" | "logprob"), damping (relative, default 0.01), batch_size, seed.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datablame.bench.peers import Peer, register_peer
from datablame.errors import DatablameError
from datablame.features.checkpoints import load_checkpoint_model, select_checkpoints
from datablame.features.context import AttributionContext
from datablame.grads import select_modules
from datablame.models.tokenize import Encoded, pad_batch, per_row_loss

log = logging.getLogger("datablame")

_MAX_EXACT_DIM = 16_384  # exact (unprojected) features: the kernel is dim^2 floats


def _output_of_loss(loss: torch.Tensor, output: str) -> torch.Tensor:
    if output == "logprob":
        return -loss
    return -loss - torch.log(-torch.expm1(-loss).clamp_min(1e-6))  # log(p̄ / (1 - p̄)), p̄ = e^-ℓ


def _make_task(output: str):
    from trak.modelout_functions import AbstractModelOutput

    class CompletionModelOutput(AbstractModelOutput):
        """f of one row from its mean completion-token NLL (see the module docstring)."""

        def __init__(self) -> None:  # abstract in traker
            super().__init__()

        def get_output(self, model, weights, buffers, input_ids, labels):  # one row (vmapped)
            logits = torch.func.functional_call(model, (weights, buffers), args=(), kwargs={"input_ids": input_ids[None]}).logits
            return _output_of_loss(per_row_loss(logits, labels[None]), output).sum()

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            input_ids, labels = batch
            with torch.no_grad():
                logits = torch.func.functional_call(model, (weights, buffers), args=(), kwargs={"input_ids": input_ids}).logits
                loss = per_row_loss(logits, labels)
            q = torch.ones_like(loss) if output == "logprob" else -torch.expm1(-loss)
            return q.clone().detach().unsqueeze(-1)

    return CompletionModelOutput()


def _batches(enc: Encoded, size: int, pad_id: int, device: torch.device):
    for start in range(0, len(enc), size):
        b = pad_batch(enc.input_ids[start : start + size], enc.labels[start : start + size], pad_id)
        yield b["input_ids"].to(device), b["labels"].to(device)


@register_peer
class TrakerPeer(Peer):
    name = "traker"
    library = "traker"
    entry_point = "trak.TRAKer: featurize, finalize_features, start_scoring_checkpoint, score, finalize_scores"
    reference = "trak"

    def __init__(
        self,
        checkpoints: str | int | list[int] = "all",
        models: list[str] | None = None,
        proj_dim: int | None = 1024,
        output: str = "margin",
        damping: float = 0.01,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        if proj_dim is not None and proj_dim < 200:
            raise DatablameError(f"traker proj_dim={proj_dim} fails on CPU (BasicProjector)",
                                 "use proj_dim >= 200, or null for exact gradients (NoOpProjector)")
        if output not in ("margin", "logprob"):
            raise DatablameError(f"unknown traker output {output!r}", "choose margin or logprob")
        super().__init__(checkpoints=checkpoints, models=list(models) if models else None, proj_dim=proj_dim,
                         output=output, damping=float(damping), batch_size=batch_size, seed=seed)

    def unavailable(self) -> str | None:
        try:
            importlib.import_module("trak")  # the distribution "traker" installs module "trak"
        except Exception as err:  # noqa: BLE001
            return f"traker is not importable ({type(err).__name__}: {err})"
        return None

    def _members(self, inputs: AttributionContext) -> list[Path | None]:
        if self.options["models"]:
            return [Path(m) for m in self.options["models"]]
        if not inputs.checkpoints and self.options["checkpoints"] in ("all", "last"):
            return [None]  # the attributed model alone
        return [i.path for i in select_checkpoints(inputs, self.options["checkpoints"])]

    def scores(self, inputs: AttributionContext) -> np.ndarray:
        from trak import TRAKer
        from trak.projectors import NoOpProjector

        opts = self.options
        device = next(inputs.model.parameters()).device
        pad = inputs.tokenizer.pad_token_id or 0
        bs = opts["batch_size"] or inputs.attribution.batch_size
        work = copy.deepcopy(inputs.model).eval()  # TRAKer loads member weights into it
        if hasattr(work, "set_attn_implementation"):
            # SDPA has no vmap batching rule on CPU (slow fallback); eager is the same maths
            with contextlib.suppress(ValueError, ImportError, AttributeError):
                work.set_attn_implementation("eager")
        for p in work.parameters():
            p.requires_grad_(True)
        grad_wrt = [f"{n}.weight" for n, _ in select_modules(work, inputs.attribution.modules)]
        members = self._members(inputs)

        def state_of(member: Path | None) -> dict[str, torch.Tensor]:  # one model in memory at a time
            model = inputs.model if member is None else load_checkpoint_model(inputs, member)
            return {k: v.detach().clone() for k, v in model.state_dict().items()}
        n_rows, n_q = len(inputs.rows), len(inputs.query_rows)
        projector = None
        if opts["proj_dim"] is None:  # exact: traker's kernel is then (#params)^2
            n_params = sum(dict(work.named_parameters())[n].numel() for n in grad_wrt)
            if n_params > _MAX_EXACT_DIM:
                raise DatablameError(
                    f"exact traker features would have {n_params} dims (a {n_params}^2 kernel)",
                    f"select fewer modules (attribution.modules) to <= {_MAX_EXACT_DIM} weights, or set proj_dim",
                )
            projector = NoOpProjector(device=str(device))
        with tempfile.TemporaryDirectory(prefix="traker-") as save_dir:
            traker = TRAKer(
                model=work, task=_make_task(opts["output"]), train_set_size=n_rows, save_dir=save_dir,
                load_from_save_dir=True, device=str(device), projector=projector,
                proj_dim=int(opts["proj_dim"] or 0), use_half_precision=False,
                projector_seed=int(opts["seed"]), grad_wrt=grad_wrt, logging_level=logging.WARNING,
            )
            lambdas = []
            for mid, member in enumerate(members):
                traker.load_checkpoint(state_of(member), model_id=mid)
                for ids, labels in _batches(inputs.rows, bs, pad, device):
                    traker.featurize(batch=(ids, labels), num_samples=len(ids))
                g = torch.as_tensor(np.asarray(traker.saver.current_store["grads"]), dtype=torch.float64)
                lam = opts["damping"] * float((g * g).sum()) / min(g.shape)
                traker.score_computer.lambda_reg = lam
                lambdas.append(lam)
                traker.finalize_features(model_ids=[mid])
            for mid, member in enumerate(members):
                traker.start_scoring_checkpoint(exp_name="queries", checkpoint=state_of(member), model_id=mid,
                                                num_targets=n_q)
                for ids, labels in _batches(inputs.query_rows, bs, pad, device):
                    traker.score(batch=(ids, labels), num_samples=len(ids))
            scores = np.asarray(traker.finalize_scores(exp_name="queries"), dtype=np.float64).T.copy()
        self.options["lambda_reg"] = lambdas
        self.options["members"] = [str(m) if m is not None else "final" for m in members]
        return scores


def run_traker(inputs: AttributionContext, **options: Any):
    """Run the traker peer on `inputs`: a `PeerRun` with scores [Q, R], seconds and peak bytes."""
    from datablame.bench.peers import run_peer

    return run_peer("traker", inputs, options)
