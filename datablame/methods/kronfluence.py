"""kronfluence as an attribution backend: the reference for our `ekfac` (seed 000's setup).

Runs kronfluence's `Analyzer` (`fit_all_factors` + `compute_pairwise_scores`) on exactly
this run's model, training rows and queries, tracking the modules of
`attribution.modules` (default: MLP gate/up/down_proj of all layers, as in seed 000), with a
`Task` whose loss is ours: each row's mean next-token NLL over its completion tokens (nats),
summed over the batch, so per-row gradients are the same as `gradient_features`'. The query
measurement is the query's own loss. kronfluence wraps modules in place, so it works on a
deep copy of the model (one extra copy of the weights in memory).

score[q, r] = g_qᵀ (F + λI)⁻¹ g_r in the full (unprojected) parameter space of the tracked
modules. Sign: higher = up-weighting (training on) the row lowers the query's loss
(kronfluence's pairwise score, unchanged). Unit: nats of query-loss decrease per unit extra
weight on the row in the mean training objective.

Options (`attribution.options.kronfluence`):
- `strategy` ("ekfac" | "kfac" | "diagonal" | "identity", default "ekfac");
- `damping` (null = kronfluence's heuristic 0.1 x mean eigenvalue per module, or an absolute λ);
- `query_gradient_rank` (null = exact query gradients; an int = kronfluence's low-rank SVD
  of each preconditioned query gradient, `query_gradient_low_rank`);
- `empirical_fisher` (true: the rows' own labels, which is what our `ekfac` uses by default;
  false: labels sampled from the model, kronfluence's own default);
- `batch_size` (null = attribution.batch_size); `seed` (0, for sampled labels).

Architectures: GPT-2's Conv1D modules are swapped for the equivalent `nn.Linear` in the copy
(what kronfluence's own GPT-2 example does); modules that see flattened [batch*tokens, d]
inputs (OPT's MLP) get them viewed back as [batch, tokens, d] so kronfluence sees one example
per row, not per token. kronfluence always includes biases (an appended column of ones), as
our features do with `attribution.modules.bias: true` (the default).

Factors are written under `<work_dir>/kronfluence/` named by a hash of model, data, modules,
strategy and Fisher kind, and reused by later runs.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, StrictBool
from torch.utils.data import Dataset

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.grads import select_modules
from datablame.layout import AttributionLayout
from datablame.methods.base import Method, MethodOptions, check_scores_shape, register
from datablame.models.tokenize import IGNORE, Encoded, pad_batch, per_row_loss
from datablame.utils.io import sha256_strings

STRATEGIES = ("ekfac", "kfac", "diagonal", "identity")


class _EncodedDataset(Dataset):
    def __init__(self, enc: Encoded) -> None:
        self.enc = enc

    def __len__(self) -> int:
        return len(self.enc)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.enc.input_ids[i], self.enc.labels[i]


def _collate(pad_id: int):
    def collate(items):
        return pad_batch([x for x, _ in items], [y for _, y in items], pad_id)

    return collate


_PLAIN_LINEAR_SUBCLASSES = ("FalconLinear",)  # nn.Linear subclasses computing x Wᵀ + b, unknown to kronfluence


def conv1d_to_linear(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every transformers Conv1D (y = x W + b, W [in, out]) by the same nn.Linear, in
    place (and Falcon's nn.Linear subclass by a plain nn.Linear: kronfluence looks types up exactly)."""
    from datablame.grads.modules import is_conv1d, linear_dims

    for name, mod in list(model.named_modules()):
        if not (is_conv1d(mod) or type(mod).__name__ in _PLAIN_LINEAR_SUBCLASSES):
            continue
        d_in, d_out = linear_dims(mod)
        lin = torch.nn.Linear(d_in, d_out, bias=mod.bias is not None, device=mod.weight.device, dtype=mod.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(mod.weight.T if is_conv1d(mod) else mod.weight)
            if mod.bias is not None:
                lin.bias.copy_(mod.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, lin)
    return model


class _Unflatten(torch.nn.Module):
    """Wraps a kronfluence-tracked module: a flattened input [B*T, d] (OPT's MLP) is passed on
    as [B, T, d] and the output flattened back, with (B, T) from `shape["bt"]`, which the task
    sets before each forward. kronfluence keys its factors by the tracked module's own `name`,
    so the extra level in the module tree does not matter."""

    def __init__(self, inner: torch.nn.Module, shape: dict) -> None:
        super().__init__()
        self.inner, self.shape = inner, shape

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # peft reads e.g. lora_A[name].weight through the wrapper
            return getattr(self.inner, name)

    def forward(self, x, *args, **kwargs):
        bt = self.shape.get("bt")
        if bt is not None and x.dim() == 2 and x.shape[0] == bt[0] * bt[1]:
            out = self.inner(x.view(*bt, x.shape[-1]), *args, **kwargs)
            return out.reshape(-1, out.shape[-1])
        return self.inner(x, *args, **kwargs)


def unflatten_tokens(model: torch.nn.Module, names: list[str], shape: dict) -> None:
    """Wrap modules `names` (after `prepare_model`) in `_Unflatten`, in place."""
    for n in names:
        parent, _, child = n.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, _Unflatten(getattr(owner, child), shape))


def make_task(module_names: list[str], seed: int = 0, shape: dict | None = None):
    """A kronfluence Task computing our loss (mean completion NLL per row, summed over rows)."""
    from kronfluence.task import Task

    class CompletionNLLTask(Task):
        def __init__(self) -> None:
            self.gen = torch.Generator().manual_seed(seed)

        def _logits(self, batch, model):
            if shape is not None:
                shape["bt"] = tuple(batch["attention_mask"].shape)
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

        def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
            logits = self._logits(batch, model)
            labels = batch["labels"]
            if sample:  # true Fisher: labels drawn from the model at the completion positions
                with torch.no_grad():
                    probs = torch.softmax(logits[:, :-1].detach().float(), dim=-1).cpu()
                    draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=self.gen)
                    draws = draws.view(probs.shape[:2]).to(labels.device)
                    labels = labels.clone()
                    labels[:, 1:] = torch.where(labels[:, 1:] != IGNORE, draws, labels[:, 1:])
            return per_row_loss(logits, labels).sum()

        def compute_measurement(self, batch, model) -> torch.Tensor:
            return per_row_loss(self._logits(batch, model), batch["labels"]).sum()

        def get_influence_tracked_modules(self):
            return list(module_names)

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return CompletionNLLTask()


@register
class KronfluenceBackend(Method):
    name = "kronfluence"
    family = "influence"
    unit = ("nats of query-loss decrease per unit extra weight on the row in the mean training "
            "objective (kronfluence pairwise score)")
    cost = "kronfluence: 2 passes over the rows to fit (covariances, lambda), 1 to score; full-size factors"

    class Options(MethodOptions):
        strategy: Literal[STRATEGIES] = Field("ekfac", description="kronfluence's curvature strategy")
        damping: float | None = Field(None, ge=0, description="absolute λ (null = kronfluence's heuristic "
                                      "0.1 x mean eigenvalue per module)")
        query_gradient_rank: int | None = Field(None, ge=1, description="low-rank SVD of each preconditioned "
                                                "query gradient (null = exact)")
        empirical_fisher: StrictBool = Field(True, description="true: the rows' own labels (as our ekfac); "
                                             "false: labels sampled from the model")
        batch_size: int | None = Field(None, description="rows per batch (null = attribution.batch_size)")
        seed: int = Field(0, description="seed of sampled labels")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.strategy, self.damping, self.rank = o.strategy, o.damping, o.query_gradient_rank
        self.empirical_fisher, self.batch_size, self.seed = o.empirical_fisher, o.batch_size, o.seed
        self._analyzer = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def _setup(self, ctx: AttributionContext):
        try:
            from kronfluence.analyzer import Analyzer, prepare_model
            from kronfluence.arguments import FactorArguments
            from kronfluence.utils.dataset import DataLoaderKwargs
        except ImportError:
            raise DatablameError("kronfluence is not installed", "pip install --no-deps kronfluence==1.0.1") from None
        modules = [n for n, _ in select_modules(ctx.model, ctx.attribution.modules)]
        shape: dict = {}
        task = make_task(modules, self.seed, shape)
        work = conv1d_to_linear(copy.deepcopy(ctx.model).eval())
        model = prepare_model(work, task)  # wraps modules in place
        unflatten_tokens(model, modules, shape)
        if ctx.work_dir is not None:
            out = AttributionLayout(ctx.work_dir).cache_dir("kronfluence")
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="datablame-kronfluence-")
            out = Path(self._tmp.name)
        device = next(ctx.model.parameters()).device
        logging.getLogger("kronfluence").setLevel(logging.WARNING)
        analyzer = Analyzer("datablame", model=model, task=task, cpu=device.type == "cpu", output_dir=str(out))
        pad = ctx.tokenizer.pad_token_id or 0
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=_collate(pad)))
        identity = [
            str(ctx.fingerprint), ctx.corpus.fingerprint(), *modules,
            self.strategy, str(self.empirical_fisher), str(self.seed), str(ctx.model_cfg.max_length), ctx.model_cfg.loss_on,
        ]
        # no fingerprint (a model built in memory): never reuse factors across calls
        self._factors_name = f"{self.strategy}_{sha256_strings(identity)[:16]}"
        self._overwrite = ctx.fingerprint is None
        self._factor_args = FactorArguments(strategy=self.strategy, use_empirical_fisher=self.empirical_fisher)
        self._analyzer = analyzer
        return analyzer

    def _bs(self, ctx: AttributionContext) -> int:
        return self.batch_size or ctx.attribution.batch_size

    def fit(self, ctx: AttributionContext) -> None:
        analyzer = self._setup(ctx)
        torch.manual_seed(self.seed)
        analyzer.fit_all_factors(
            factors_name=self._factors_name, dataset=_EncodedDataset(ctx.rows),
            per_device_batch_size=self._bs(ctx), factor_args=self._factor_args,
            overwrite_output_dir=self._overwrite,
        )

    def score(self, ctx: AttributionContext) -> np.ndarray:
        from kronfluence.arguments import ScoreArguments

        if self._analyzer is None:
            self.fit(ctx)
        if len(ctx.query_rows) == 0:
            return np.zeros((0, len(ctx.rows)))
        args = ScoreArguments(damping_factor=self.damping, query_gradient_low_rank=self.rank)
        name = f"scores_{self._factors_name}"
        self._analyzer.compute_pairwise_scores(
            scores_name=name, factors_name=self._factors_name,
            query_dataset=_EncodedDataset(ctx.query_rows), train_dataset=_EncodedDataset(ctx.rows),
            per_device_query_batch_size=self._bs(ctx), per_device_train_batch_size=self._bs(ctx),
            score_args=args, overwrite_output_dir=True,
        )
        scores = self._analyzer.load_pairwise_scores(name)["all_modules"].double().cpu().numpy()
        check_scores_shape(self.name, scores, len(ctx.query_rows), len(ctx.rows))
        return scores
