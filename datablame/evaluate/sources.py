"""Which models an evaluation compares: the base, the fine-tuned model, and any checkpoints.

For a run directory the fine-tuned model is `<run>/model/final`; its base is, in order:
an explicit path (`evaluate.base`), the run's `model/base` (tiny runs save their random base
there), the same LoRA model with its adapter switched off (`disable_adapter`, no second copy
in memory), or the configured `model.*` (a full fine-tune of a hub or local model).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datablame.config import ModelConfig, RunConfig, load_config
from datablame.errors import DatablameError
from datablame.layout import RunLayout
from datablame.models.loading import LoadedModel, load_model

log = logging.getLogger("datablame")


@dataclass
class EvalModel:
    """One compared model. `adapter_off`: run it with its PEFT adapter disabled (the base)."""

    name: str
    loaded: LoadedModel
    adapter_off: bool = False

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def source(self) -> str:
        return self.loaded.source + (" (adapter off)" if self.adapter_off else "")

    @contextlib.contextmanager
    def active(self) -> Iterator[Any]:
        """The model in eval mode, its adapter switched off for the base."""
        model = self.loaded.model
        model.eval()
        if not self.adapter_off:
            yield model
            return
        with model.disable_adapter():
            yield model


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def run_config(run_dir: str | Path) -> RunConfig:
    """The config a run directory was made with (`config.resolved.yaml`)."""
    layout = RunLayout(Path(run_dir))
    if not layout.resolved_config.is_file():
        raise DatablameError(
            f"{run_dir} is not a run directory: {layout.resolved_config.name} is missing",
            "pass the output.dir of a trained run (or evaluate loaded models directly)",
        )
    return load_config(layout.resolved_config)


def _with_device(cfg: ModelConfig, device: str | None) -> ModelConfig:
    return cfg if device is None else cfg.model_copy(update={"device": device})


def run_models(
    run_dir: str | Path,
    *,
    base: str | None = None,
    checkpoints: Sequence[str] = (),
    device: str | None = None,
) -> list[EvalModel]:
    """[base, finetuned, *checkpoints] of a trained run directory."""
    cfg = run_config(run_dir)
    mcfg = _with_device(cfg.model, device)
    layout = RunLayout(Path(run_dir))
    final = layout.final_model
    if not final.is_dir():
        raise DatablameError(f"no fine-tuned model in {final}", "run `datablame train` first, or fix the run directory")
    tuned = load_model(mcfg, path_override=str(final), seed=cfg.seed)
    models = [_base_model(mcfg, cfg.seed, layout, tuned, base), EvalModel("finetuned", tuned)]
    for ck in checkpoints:
        path = Path(ck)
        if not path.is_dir():
            raise DatablameError(f"checkpoint {ck} does not exist", "fix evaluate.checkpoints (a model directory)")
        models.append(EvalModel(_unique(path.name, models), load_model(mcfg, path_override=str(path), seed=cfg.seed)))
    return models


def _unique(name: str, models: list[EvalModel]) -> str:
    taken = {m.name for m in models}
    out, n = name, 2
    while out in taken:
        out, n = f"{name}-{n}", n + 1
    return out


def _base_model(cfg: ModelConfig, seed: int, layout: RunLayout, tuned: LoadedModel, base: str | None) -> EvalModel:
    if base:
        if not Path(base).is_dir():
            raise DatablameError(f"base model directory {base} does not exist", "fix evaluate.base (--base)")
        return EvalModel("base", load_model(cfg, path_override=base, seed=seed))
    if layout.base_model.is_dir():
        return EvalModel("base", load_model(cfg, path_override=str(layout.base_model), seed=seed))
    if hasattr(tuned.model, "disable_adapter"):
        return EvalModel("base", tuned, adapter_off=True)
    if cfg.kind == "tiny":
        raise DatablameError(f"the tiny run has no base model in {layout.base_model}",
                             "restore model/base, or pass evaluate.base (--base) a model directory")
    log.info("base model: the configured model.* (%s)", cfg.name_or_path or cfg.kind)
    return EvalModel("base", load_model(cfg, seed=seed))


def named_models(models: Sequence[EvalModel | tuple[str, LoadedModel]]) -> list[EvalModel]:
    """EvalModels from EvalModels or (name, LoadedModel) pairs; names must be unique."""
    out = [m if isinstance(m, EvalModel) else EvalModel(m[0], m[1]) for m in models]
    names = [m.name for m in out]
    if not out:
        raise DatablameError("no models to evaluate", "pass a run directory or at least one loaded model")
    if len(set(names)) != len(names):
        raise DatablameError(f"model names repeat: {names}", "give every compared model its own name")
    return out
