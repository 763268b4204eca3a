"""Settings of `evaluate` (the config's `evaluate:` and `tracking:` sections, defined in
`datablame.config_evaluate`) and building them from plain arguments.

    EvaluateSettings(types=["generation", "bertscore"], prompts_file="prompts.jsonl")
    TrackingSettings(backend="mlflow")            # sqlite store under <run>/evaluate/tracking
"""

from __future__ import annotations

from pathlib import Path

from datablame.config_evaluate import (  # noqa: F401 (re-exported)
    EVAL_TYPES,
    REFERENCE_TYPES,
    BertScoreSettings,
    BootstrapSettings,
    DecodingSettings,
    EvalType,
    EvaluateSettings,
    MMLUSettings,
    SimilaritySettings,
    TrackingSettings,
)
from datablame.errors import DatablameError


def settings_from(types: list[str] | str | None = None, **kw: object) -> EvaluateSettings:
    """EvaluateSettings from plain arguments (`types` may be "all" or "generation,mmlu")."""
    from pydantic import ValidationError

    if isinstance(types, str):
        types = [t.strip() for t in types.split(",") if t.strip()]
    if types is not None:
        kw["types"] = types
    try:
        return EvaluateSettings(**kw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DatablameError(
            f"evaluate setting {where}: {first['msg']}",
            f"use --type with one or more of {', '.join([*EVAL_TYPES, 'all'])} and valid values",
        ) from None


def default_out_dir(run_dir: str | Path) -> Path:
    from datablame.layout import RunLayout

    return RunLayout(run_dir).evaluate_dir
