"""The `diff:` section of the run config (`datablame diff`, see `datablame.diff`): which two
models to compare, the prompts and alphas to scan, how samples are decoded and labelled, and
how the surfaced samples are blamed. Part of the config layer (imported by `datablame.config`).

    diff:
      before: runs/x/model/base           # default: the run's model/base, else model.name_or_path
      after: runs/x/model/final           # or adapter: <PEFT dir> (after = before + adapter)
      prompts_file: prompts.jsonl         # {"id": ..., "prompt": ...} per line
      alphas: [0, 0.5, 1, 2, 4]
      n_samples: 50
      classifier: {kind: rules, keywords: [walrus]}
      methods: [grad_cosine, bm25]        # default: attribution.methods
      pool_size: 100
      patch: {top_k: 20, seeds: 3, steps: 200, r: 8}   # LoRA patching against controls

The sampling and classifier sections mirror `datablame.diff.SamplingSettings` and
`ClassifierSettings` field for field (the config layer may not import the diff stage; a test
checks that they agree), so a typo is refused when the config is loaded.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DIFF_STAGES = ("scan", "attribute", "patch", "report")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiffSamplingSettings(_Strict):
    """How amplified samples are decoded (mirrors datablame.diff.SamplingSettings)."""

    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = Field(0, ge=0)


class DiffClassifierSettings(_Strict):
    """Which classifier labels the samples (mirrors datablame.diff.ClassifierSettings)."""

    kind: Literal["rules", "judge"] = "rules"
    behaviour: str = ""
    keywords: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    match: Literal["any", "all"] = "any"
    backend: str = "local"
    model: str | None = None
    backend_options: dict[str, Any] = Field(default_factory=dict)
    threshold: float = Field(5.0, ge=0.0, le=10.0)
    max_new_tokens: int = Field(6, ge=1)
    cache: str | None = None


class DiffPatchSettings(_Strict):
    """The patch stage: per blaming method, drop its top_k rows from the fine-tuning set and
    LoRA-fine-tune the after-model for a fixed number of steps; controls: the same fine-tune on
    every row (baseline) and on every row minus top_k random rows; `seeds` training seeds per
    arm; then scan each patched model at `alpha` (default: the scan's alpha with the highest
    pooled rate) with `n_samples` per prompt (default: diff.n_samples)."""

    top_k: int = Field(20, ge=1)  # rows removed per method: the top_k of its blame (mean percentile over queries)
    seeds: int = 3  # training seeds per arm (0 .. seeds-1)
    steps: int = Field(200, ge=1)  # the fixed step budget of every fine-tune
    r: int = Field(8, ge=1)  # LoRA rank
    lora_alpha: int = Field(16, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = Field(1e-4, gt=0.0)
    batch_size: int = Field(8, ge=1)
    alpha: float | None = None  # scan alpha of the patched models; null: the scan's alpha with the highest rate
    n_samples: int | None = Field(None, ge=1)  # samples per prompt; null: diff.n_samples
    methods: list[str] | None = None  # null: every method of blame.json
    random_seed: int = Field(0, ge=0)  # draws the random control's rows (one draw per training seed)
    keep_models: bool = True  # keep each arm's LoRA model (patch/models/<key>/final)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"diff.patch.seeds must be at least 1 training seed per arm (3 or more to see the "
                             f"seed-to-seed spread), got {v}")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(f"diff.patch.alpha must be a finite number >= 0 (or null: the scan's alpha with the "
                             f"highest rate), got {v}")
        return v


class DiffSettings(_Strict):
    before: str | None = None  # model dir / checkpoint / hub id; default: <run>/model/base or model.name_or_path
    after: str | None = None  # default: <run>/model/final (unless adapter is set)
    adapter: str | None = None  # PEFT adapter dir: the after-model is `before` with it applied
    prompts_file: str | None = None  # JSONL, one {"prompt", "id"?} per line (required to scan)
    alphas: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0])
    n_samples: int = Field(50, ge=1)  # samples per (prompt, alpha)
    sampling: DiffSamplingSettings = Field(default_factory=DiffSamplingSettings)
    classifier: DiffClassifierSettings = Field(default_factory=DiffClassifierSettings)
    device: str | None = None  # default: model.device
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    methods: list[str] = Field(default_factory=list)  # default: attribution.methods
    pool_size: int = Field(100, ge=1)  # BM25 candidate rows the methods score
    top_k: int = Field(10, ge=1)  # rows listed per method, and the agreement's top-k
    max_queries: int | None = Field(20, ge=1)  # surfaced samples blamed at most (null: all)
    blame_alphas: list[float] | None = None  # only samples of these alphas are blamed (null: all)
    patch: DiffPatchSettings = Field(default_factory=DiffPatchSettings)  # the patch stage
    out_dir: str | None = None  # default: <run>/diff
    overwrite: bool = False  # discard a scan made with other settings in out_dir

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("diff.alphas must hold at least one alpha, e.g. [0, 1, 4]")
        bad = [a for a in v if not math.isfinite(a) or a < 0]
        if bad:
            raise ValueError(f"diff.alphas must be finite numbers >= 0 (alpha 0 = plain sampling of the "
                             f"after-model), got {bad}")
        return v

    @field_validator("blame_alphas")
    @classmethod
    def _blame_alphas(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not math.isfinite(a) or a < 0 for a in v):
            raise ValueError(f"diff.blame_alphas must be finite numbers >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _one_after(self) -> DiffSettings:
        if self.after and self.adapter:
            raise ValueError("diff.after and diff.adapter are exclusive: give a second model, or an adapter "
                             "to apply to diff.before")
        return self
