"""Load the before- and after-model of a diff: two checkpoints, two models, or base + adapter.

Each of `before` and `after` is a local directory (a saved model, a Trainer checkpoint, a
run's `model/final`, or a PEFT adapter directory, whose recorded base is loaded under it) or a
Hugging Face hub id. `adapter` instead makes the after-model `before` with that PEFT adapter
applied. Both models are loaded through `datablame.models.load_model` (the same friendly
errors as a run's model) and must share a tokenizer (`check_same_vocabulary`).
"""

from __future__ import annotations

from pathlib import Path

from datablame.config import ModelConfig
from datablame.diff.sampling import ModelPair, check_same_vocabulary
from datablame.errors import DatablameError
from datablame.models.loading import LoadedModel, load_model


def _load_one(spec: str, *, device: str, dtype: str, adapter: str | None = None) -> LoadedModel:
    if not spec:
        raise DatablameError("a diff needs a before- and an after-model, one of them is empty",
                             "give each as a model directory, a checkpoint directory or a hub id")
    path = Path(spec).expanduser()
    cfg = ModelConfig(kind="hf", name_or_path=spec, device=device, dtype=dtype, adapter=adapter)  # type: ignore[arg-type]
    if path.is_dir() and adapter is None:  # a checkpoint or adapter directory finds its tokenizer and base
        return load_model(cfg, path_override=str(path))
    return load_model(cfg)


def load_pair(before: str, after: str | None = None, *, adapter: str | None = None, device: str = "auto",
              dtype: str = "float32") -> ModelPair:
    """The two models of a diff in eval mode on one device. Give `after` (a second model or
    checkpoint) or `adapter` (the after-model is `before` + this PEFT adapter), not both."""
    if (after is None) == (adapter is None):
        raise DatablameError("a diff needs exactly one of: an after-model, or an adapter to apply to the before-model",
                             "pass after=<model dir or hub id> or adapter=<PEFT adapter dir>")
    b = _load_one(before, device=device, dtype=dtype)
    a = _load_one(before, device=device, dtype=dtype, adapter=adapter) if adapter else _load_one(
        str(after), device=device, dtype=dtype)
    check_same_vocabulary(b.model, a.model, b.tokenizer, a.tokenizer)
    return ModelPair(b.model.eval(), a.model.eval(), a.tokenizer, before_source=b.source, after_source=a.source)
