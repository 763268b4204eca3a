"""The run config of a table (`data.kind: table`): a config of its own, `TabularRunConfig`, chosen
when the YAML's `data` section says `kind: table`. Part of the config layer (imported by
`datablame.config`, whose `parse_config` dispatches on that key).

Why a separate config rather than a union inside `RunConfig`: a table run shares nothing with a
text run's data, model, training, query, store, retrieval or verify settings, so a union would
leave every text section present but meaningless and make every text code path narrow its type.
A text config (no `data.kind`) parses exactly as before; a table config is validated by these
classes only, so a typo or a bad value is named by its key (`model.xgboost.max_depth`: the model
section is a union tagged by `model.kind`, and pydantic names the tag).

    data: {kind: table, path: loans.csv, target: default, task: classification, categorical: [region]}
    data: {kind: table, dataset: breast_cancer}            # scikit-learn's bundled tables, no download
    model: {kind: xgboost, n_estimators: 100, max_depth: 4}
    model: {kind: xgboost, load: model.json}               # a saved model (its settings come from the file)
    attribution: {methods: [boostin, leaf_cooccurrence], queries: 5, top_k: 10}
    verify: {checks: [loo, removal, lds], max_train_rows: 200, lds: {subsets: 32, fraction: 0.5}}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_MAX_SEED = 2**32 - 1
TableSeed = Annotated[int, Field(ge=0, le=_MAX_SEED)]
BUNDLED_TABLES = ("breast_cancer", "wine", "diabetes", "digits")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TableDataSettings(_Strict):
    """A CSV/Parquet file with a target column, or one of scikit-learn's bundled tables."""

    kind: Literal["table"]
    path: str | None = None  # .csv or .parquet
    dataset: Literal["breast_cancer", "wine", "diabetes", "digits"] | None = None
    target: str | None = None  # the column to predict (path only)
    task: Literal["classification", "regression"] | None = None  # null: inferred from the target
    categorical: list[str] | None = None  # null: the non-numeric and bool columns
    test_size: float = Field(0.25, gt=0.0, lt=1.0)  # fraction of rows held out (the queries)
    seed: TableSeed = 0  # draws the split

    @model_validator(mode="after")
    def _one_source(self) -> TableDataSettings:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("data: give either data.path (a .csv/.parquet table) or data.dataset "
                             f"(one of {', '.join(BUNDLED_TABLES)}), not both or neither")
        if self.path is not None and not self.target:
            raise ValueError("data.target is required with data.path: name the column to predict")
        if self.dataset is not None:
            given = [k for k in ("target", "task", "categorical") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"data.{given[0]} cannot be set for a bundled dataset (it fixes its own target "
                                 "and task); drop it, or use data.path")
        return self


class _ModelSettings(_Strict):
    load: str | None = None  # a saved model: XGBoost .json/.ubj, LightGBM .txt, scikit-learn .joblib/.pkl
    trust_pickle: bool = False  # .joblib/.pkl only: unpickling runs any code in the file

    def hyperparameters(self) -> dict[str, Any]:
        """The model constructor's keyword arguments (null ones left to the model's default)."""
        return {k: v for k, v in self.model_dump(exclude={"kind", "load", "trust_pickle"}).items() if v is not None}

    @model_validator(mode="after")
    def _load_alone(self) -> _ModelSettings:
        if self.load is not None:
            set_here = sorted(self.model_fields_set - {"kind", "load", "trust_pickle"})
            if set_here:
                raise ValueError(f"model.{set_here[0]} cannot be set with model.load: a saved model brings its own "
                                 "settings; drop it, or drop model.load to train one")
        return self


class MLPSettings(_ModelSettings):
    kind: Literal["mlp"]
    hidden: int = Field(16, ge=1)
    l2: float = Field(1e-3, ge=0.0)
    epochs: int = Field(300, ge=1)
    lr: float = Field(0.02, gt=0.0)
    n_checkpoints: int = Field(5, ge=1)


class LinearSettings(_ModelSettings):
    """`linear`: ridge (regression) or softmax regression; `logistic`: the same, classification only."""

    kind: Literal["linear", "logistic"]
    l2: float = Field(1e-2, gt=0.0)
    max_iter: int = Field(50, ge=1)
    tol: float = Field(1e-10, gt=0.0)


class RandomForestSettings(_ModelSettings):
    kind: Literal["random_forest"]
    n_estimators: int = Field(50, ge=1)
    min_samples_leaf: int = Field(1, ge=1)
    max_depth: int | None = Field(None, ge=1)


class GradientBoostingSettings(_ModelSettings):
    kind: Literal["gradient_boosting"]
    n_estimators: int = Field(50, ge=1)
    learning_rate: float = Field(0.1, gt=0.0)
    max_depth: int = Field(3, ge=1)


class XGBoostSettings(_ModelSettings):
    kind: Literal["xgboost"]
    n_estimators: int = Field(50, ge=1)
    learning_rate: float = Field(0.3, gt=0.0)
    max_depth: int = Field(4, ge=1)
    reg_lambda: float = Field(1.0, ge=0.0)


class LightGBMSettings(_ModelSettings):
    kind: Literal["lightgbm"]
    n_estimators: int = Field(50, ge=1)
    learning_rate: float = Field(0.1, gt=0.0)
    num_leaves: int = Field(8, ge=2)
    min_data_in_leaf: int = Field(5, ge=1)
    reg_lambda: float = Field(0.0, ge=0.0)


TableModelSettings = Annotated[
    MLPSettings | LinearSettings | RandomForestSettings | GradientBoostingSettings | XGBoostSettings | LightGBMSettings,
    Field(discriminator="kind"),
]


class TableAttributionSettings(_Strict):
    """Which tabular methods run (`datablame methods --tabular`) on which test rows."""

    methods: list[str] = Field(default_factory=list)  # []: every method that applies to the model but random
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # {knn: {k: 10}}
    queries: int = Field(5, ge=1)  # the first N rows of the test split are the queries
    query_rows: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)  # test-split positions; overrides
    top_k: int = Field(10, ge=1)


class TableLDSSettings(_Strict):
    """The linear datamodeling score (`datablame.tabular.lds`): `subsets` retrainings, each on a random
    `fraction` of the train rows (drawn from `seed`)."""

    subsets: int = Field(32, ge=2)
    fraction: float = Field(0.5, gt=0.0, lt=1.0)
    seed: TableSeed = 0


class TableVerifySettings(_Strict):
    """Ground truth by retraining (`datablame.tabular.loo`, `datablame.tabular.lds`): exact
    leave-one-out (one retraining per train row, on a seeded subset of at most `max_train_rows`), the
    removal test (top-k vs random-k rows, per seed) and, when listed, LDS on `lds.subsets` random
    subsets of the full train split."""

    checks: list[Literal["loo", "removal", "lds"]] = Field(default_factory=lambda: ["loo", "removal"], min_length=1)
    methods: list[str] = Field(default_factory=list)  # []: the attribution's methods
    max_train_rows: int = Field(200, ge=3)
    k: int = Field(10, ge=1)
    seeds: list[TableSeed] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    lds: TableLDSSettings = Field(default_factory=TableLDSSettings)


class TableOutputSettings(_Strict):
    dir: str = "runs/table"
    overwrite: bool = False  # accepted for symmetry with text runs; table results are replaced, kept in history


class TabularRunConfig(_Strict):
    name: str = "table"
    seed: TableSeed = 0  # the model's seed
    data: TableDataSettings
    model: TableModelSettings
    attribution: TableAttributionSettings = Field(default_factory=TableAttributionSettings)
    verify: TableVerifySettings = Field(default_factory=TableVerifySettings)
    output: TableOutputSettings = Field(default_factory=TableOutputSettings)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def is_table_config(raw: Any) -> bool:
    """Whether a raw config mapping asks for a table run (`data.kind` present: only tables have it)."""
    return isinstance(raw, dict) and isinstance(raw.get("data"), dict) and "kind" in raw["data"]
