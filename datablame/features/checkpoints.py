"""Gradient features of rows and queries at the run's saved checkpoints (TracIn, TRAK, LESS).

`checkpoint_features(ctx, ckpt)` loads a Trainer checkpoint (`checkpoint-<step>`) and
featurizes the training rows and the queries there with exactly the modules and the
projection of `gradient_features` (same `attribution.modules`, same seeded
`FactoredProjection`: the matrices depend only on seed, module name and shape, so features
of different checkpoints live in one space). Results are kept on the context (`ctx.shared`) and, when
`ctx.work_dir` is set, the row features on disk (`<work_dir>/checkpoint_features/`),
keyed by everything that must match (weights fingerprint, data, modules, projection, max
length, loss mask). A checkpoint whose weights equal the attributed model reuses
`gradient_features(ctx)` instead of recomputing.

Learning rate per checkpoint (`checkpoint_schedule`): η_c is the mean learning rate of the
steps that led to the checkpoint, (previous checkpoint's step, this step] (TracIn's "step
size between checkpoints", LESS's per-epoch mean lr). The per-step rates come from, in
order of preference:

1. "schedule": the schedule rebuilt from the run's own `training` config
   (`transformers.get_scheduler` with its type and peak lr, warmup ceil(total x warmup_ratio)
   as `TrainingArguments.get_warmup_steps` computes it, and `max_steps` from
   `trainer_state.json`), accepted only if it reproduces the rates saved in the checkpoints'
   `scheduler.pt` and logged in `trainer_state.json`. Nothing a run directory holds is
   unpickled (`training_args.bin` is never read; torch files load with `weights_only=True`);
2. "log_history": `learning_rate` entries of `trainer_state.json` (transformers 5 logs, at
   step s, the rate step s used: "learning rate before update"), held constant between
   entries;
3. "optimizer": the rate saved in `scheduler.pt` / `optimizer.pt` (the next step's rate);
4. "uniform": 1.0, with a warning (TracIn then reduces to a plain checkpoint sum).
"""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datablame.config import TrainingConfig
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.gradients import (
    GradFeatures,
    featurizer_for,
    gradient_features,
    measure_queries,
)
from datablame.grads import GradientFeaturizer, select_modules
from datablame.layout import AttributionLayout
from datablame.utils.io import atomic_save_npz
from datablame.utils.safe_load import (
    UNREADABLE,
    describe_load_error,
    load_npz_cache,
    torch_load_weights,
)

log = logging.getLogger("datablame")

_STEP = re.compile(r"checkpoint-(\d+)$")
# row features of checkpoints kept in memory for methods of the same run (TracIn, TRAK and
# LESS share them); beyond this they are reread from the disk cache (or recomputed)
_MEM_CACHE_BYTES = 4 << 30


@dataclass(frozen=True)
class CheckpointInfo:
    """One saved checkpoint and the learning rate that weights it."""

    path: Path
    step: int
    lr: float  # mean learning rate of the steps (previous checkpoint, this one]
    steps: int  # steps since the previous checkpoint (or since the start)
    lr_source: str  # schedule | log_history | optimizer | uniform


def _step_of(path: Path) -> int:
    m = _STEP.search(path.name)
    if m:
        return int(m.group(1))
    state = _trainer_state(path)
    if "global_step" in state:
        return int(state["global_step"])
    raise DatablameError(f"{path} is not a Trainer checkpoint (checkpoint-<step>)", "point at checkpoint-<step> dirs")


def _trainer_state(path: Path) -> dict:
    """trainer_state.json of a checkpoint; {} (with a warning) when missing or unreadable."""
    f = path / "trainer_state.json"
    if not f.is_file():
        return {}
    try:
        state = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable %s (%s: %s)", f, type(err).__name__, err)
        return {}
    if not isinstance(state, dict):
        log.warning("ignoring %s: not a JSON object", f)
        return {}
    return state


def _saved_next_lr(path: Path) -> float | None:
    """The rate of the step after this checkpoint, as saved by the scheduler/optimizer.

    Both files are read with `weights_only=True`; one that cannot be read that way only
    drops this source (with a warning naming it).
    """
    f = path / "scheduler.pt"
    if f.is_file():
        try:
            last = torch_load_weights(f).get("_last_lr")
            if last:
                return float(last[0])
        except UNREADABLE as err:
            log.warning("ignoring %s as a learning-rate source (%s)", f, describe_load_error(err))
    f = path / "optimizer.pt"
    if f.is_file():
        try:
            groups = torch_load_weights(f, mmap=True)["param_groups"]
            return float(groups[0]["lr"])
        except UNREADABLE as err:
            log.warning("ignoring %s as a learning-rate source (%s)", f, describe_load_error(err))
    return None


def warmup_steps(training: TrainingConfig, total: int) -> int:
    """Warmup steps as `TrainingArguments.get_warmup_steps` computes them: finetune passes
    warmup_ratio (< 1) as `warmup_steps`, which transformers reads as ceil(total x ratio)."""
    ratio = float(training.warmup_ratio)
    return int(ratio) if ratio >= 1 else math.ceil(total * ratio)


def rebuilt_schedule(training: TrainingConfig, total: int) -> list[float] | None:
    """lr of steps 1..total+1 (index s-1) from the run's training config, or None.

    The same `get_scheduler` call as `Trainer.create_scheduler` (type, peak lr, warmup,
    `num_training_steps=total`, no scheduler kwargs: finetune passes none).
    """
    if total <= 0:
        return None
    if training.lr_scheduler_type == "reduce_lr_on_plateau":  # driven by eval metrics, not steps
        return None
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(training.learning_rate))
    try:
        sched = get_scheduler(
            training.lr_scheduler_type, optimizer=opt, num_warmup_steps=warmup_steps(training, total),
            num_training_steps=total, scheduler_specific_kwargs={},
        )
    except (ValueError, TypeError) as err:  # a type that needs kwargs finetune does not pass
        log.warning("cannot rebuild the %s lr schedule from training config (%s); using logged rates",
                    training.lr_scheduler_type, err)
        return None
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(total + 1):
            lrs.append(float(sched.get_last_lr()[0]))
            opt.step()
            sched.step()
    return lrs


def _log_points(history: list[dict]) -> list[tuple[int, float]]:
    points = []
    for e in history:
        if isinstance(e, dict) and "learning_rate" in e and "step" in e:
            try:
                points.append((int(e["step"]), float(e["learning_rate"])))
            except (TypeError, ValueError):
                continue
    return sorted(points)


def _log_history_lrs(history: list[dict], total: int) -> list[float] | None:
    """Per-step rates from logged `learning_rate` (entry at step s = rate of step s)."""
    points = _log_points(history)
    if not points:
        return None
    lrs, j = [], 0
    for s in range(1, total + 2):  # rate of step s: the last entry logged at a step <= s
        while j + 1 < len(points) and points[j + 1][0] <= s:
            j += 1
        lrs.append(points[j][1])
    return lrs


def _schedule_mismatch(per_step: list[float], paths: list[Path], steps: list[int], history: list[dict]) -> str | None:
    """Where the rebuilt schedule disagrees with what training saved or logged, else None."""
    def off(a: float, b: float) -> bool:
        return not np.isclose(a, b, rtol=1e-4, atol=1e-12)

    for p, s in zip(paths, steps, strict=True):
        saved = _saved_next_lr(p)
        if saved is not None and s < len(per_step) and off(per_step[s], saved):
            return f"{p / 'scheduler.pt'} ({per_step[s]:.3g} vs {saved:.3g})"
    for s, lr in _log_points(history):  # logged at step s: the rate step s used
        if 1 <= s <= len(per_step) and off(per_step[s - 1], lr):
            return f"trainer_state.json log_history at step {s} ({per_step[s - 1]:.3g} vs {lr:.3g})"
    return None


def checkpoint_schedule(ctx: AttributionContext) -> list[CheckpointInfo]:
    """The run's checkpoints in step order with their learning rates (cached)."""
    if ctx.shared.checkpoint_schedule is not None:
        return ctx.shared.checkpoint_schedule
    paths = sorted(ctx.checkpoints, key=_step_of)
    if not paths:
        ctx.shared.checkpoint_schedule = []
        return []
    steps = [_step_of(p) for p in paths]
    # the last checkpoint with a readable trainer_state.json knows max_steps and the log
    last_state = next((st for p in reversed(paths) if (st := _trainer_state(p))), {})
    history = last_state.get("log_history") if isinstance(last_state.get("log_history"), list) else []
    try:
        total = int(last_state.get("max_steps") or steps[-1])
    except (TypeError, ValueError):
        total = steps[-1]
    training = getattr(ctx, "training", None)
    per_step, source = (rebuilt_schedule(training, total) if training is not None else None), "schedule"
    if per_step is not None and (where := _schedule_mismatch(per_step, paths, steps, history)):
        log.warning("the lr schedule rebuilt from the training config disagrees with %s (was the config "
                    "changed after training?); using logged rates", where)
        per_step = None
    if per_step is None:
        per_step, source = _log_history_lrs(history, total), "log_history"
    infos, prev = [], 0
    for p, s in zip(paths, steps, strict=True):
        n = max(s - prev, 1)
        if per_step is not None:
            lr, src = float(np.mean(per_step[prev : max(s, prev + 1)])), source
        elif (saved := _saved_next_lr(p)) is not None:
            lr, src = saved, "optimizer"
        else:
            lr, src = 1.0, "uniform"
        infos.append(CheckpointInfo(p, s, lr, n, src))
        prev = s
    if any(i.lr_source == "uniform" for i in infos):
        log.warning("no learning rate found for some checkpoints (no training config, log history or "
                    "scheduler.pt); weighting them by 1.0")
    ctx.shared.checkpoint_schedule = infos
    return infos


def select_checkpoints(ctx: AttributionContext, which: str | int | list[int] = "all") -> list[CheckpointInfo]:
    """Checkpoints chosen by a method option: "all", "last", N (the last N) or a list of steps."""
    infos = checkpoint_schedule(ctx)
    if not infos:
        raise DatablameError(
            "this run has no saved checkpoints (checkpoint-<step> next to the model)",
            "train with training.save_steps below the number of steps (and save_total_limit null or > 1)",
        )
    if which == "all":
        return list(infos)
    if which == "last":
        return infos[-1:]
    if isinstance(which, int) and not isinstance(which, bool) and which >= 1:
        return infos[-which:]
    if isinstance(which, list) and which and all(isinstance(s, int) for s in which):
        by_step = {i.step: i for i in infos}
        missing = [s for s in which if s not in by_step]
        if missing:
            raise DatablameError(f"no checkpoint at steps {missing}", f"choose steps from {sorted(by_step)}")
        return [by_step[s] for s in sorted(set(which))]
    raise DatablameError(
        f"cannot read checkpoints={which!r}", "use 'all', 'last', a count N (the last N) or a list of steps"
    )


def load_checkpoint_model(ctx: AttributionContext, path: Path) -> nn.Module:
    """The model saved in `path`, on the attributed model's device, in eval mode."""
    from datablame.models import load_model

    loaded = load_model(ctx.model_cfg, path_override=str(path))
    model = loaded.model.eval()
    model._datablame_fingerprint = loaded.fingerprint  # noqa: SLF001 - cache key, set once
    return model


def feature_key(ctx: AttributionContext, fingerprint: str) -> str:
    """Key of saved row features at the weights `fingerprint` (the run's feature identity there)."""
    return ctx.identity(fingerprint).feature_key()


def featurizer_at(ctx: AttributionContext, model: nn.Module) -> GradientFeaturizer:
    """A featurizer over `model` with the run's modules and projection (checked to match)."""
    base = featurizer_for(ctx)
    modules = select_modules(model, ctx.attribution.modules)
    feat = GradientFeaturizer(model, modules, base.projection, bias=ctx.attribution.modules.bias,
                              autocast=base.autocast,  # the same precision as the attributed model's features
                              checkpointing=base.checkpointing)
    if feat.shapes != base.shapes:
        raise DatablameError(
            "the checkpoint's selected modules differ from the attributed model's "
            f"({[s[0] for s in feat.shapes][:3]}... vs {[s[0] for s in base.shapes][:3]}...)",
            "attribute checkpoints of the same model architecture (and adapter) as the final model",
        )
    return feat


def _model_fingerprint(model: nn.Module) -> str:
    fp = getattr(model, "_datablame_fingerprint", None)
    if fp is None:
        from datablame.models.loading import model_fingerprint

        fp = model_fingerprint(model)
    return fp


def features_of_model(
    ctx: AttributionContext, model: nn.Module, *, label: str, disk: bool = True
) -> GradFeatures:
    """Row and query features of any model with this run's modules and projection (cached).

    `label` names the model in progress bars and in the disk cache file name.
    """
    fingerprint = _model_fingerprint(model)
    if fingerprint == ctx.fingerprint:
        return gradient_features(ctx)  # the attributed model itself: reuse its features
    key = feature_key(ctx, fingerprint)
    mem = ctx.shared.grads_by_key
    if key in mem:
        return mem[key]
    feat = featurizer_at(ctx, model)
    pad = ctx.tokenizer.pad_token_id or 0
    bs = ctx.attribution.batch_size
    path = None
    if disk and ctx.work_dir is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        path = AttributionLayout(ctx.work_dir).cache_dir("checkpoint_features") / f"{safe}.{key}.npz"
    cached = load_npz_cache(path, ("rows", "row_losses")) if path is not None and path.is_file() else None
    if cached is not None:
        rows, row_losses = torch.from_numpy(cached["rows"]), torch.from_numpy(cached["row_losses"])
    else:
        rows, row_losses = feat.featurize(ctx.rows, bs, pad, desc=f"row gradients @ {label}")
        if path is not None:
            atomic_save_npz(path, {"rows": rows.numpy(), "row_losses": row_losses.numpy()})
    queries, query_losses = measure_queries(ctx, lambda enc: feat.featurize(enc, bs, pad, desc=False))
    out = GradFeatures(rows, queries, row_losses, query_losses, feat.shapes)
    if _cached_bytes(ctx) + rows.nbytes <= _MEM_CACHE_BYTES:  # else the disk copy serves reruns
        mem[key] = out
    return out


def checkpoint_features(
    ctx: AttributionContext, ckpt: CheckpointInfo | Path, *, disk: bool = True, model: nn.Module | None = None
) -> GradFeatures:
    """Projected loss gradients of all rows and queries at checkpoint `ckpt` (cached).

    `model`: the checkpoint's model when the caller has already loaded it (not reloaded).
    """
    path = ckpt.path if isinstance(ckpt, CheckpointInfo) else Path(ckpt)
    by_path = ctx.shared.grads_by_checkpoint
    if str(path) in by_path:
        return by_path[str(path)]
    model = model if model is not None else load_checkpoint_model(ctx, path)
    out = features_of_model(ctx, model, label=path.name, disk=disk)
    if _cached_bytes(ctx) + out.rows.nbytes <= _MEM_CACHE_BYTES:
        by_path[str(path)] = out
    return out


def _cached_bytes(ctx: AttributionContext) -> int:
    return sum(g.rows.nbytes for g in ctx.shared.grads_by_key.values())

