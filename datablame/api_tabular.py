"""Table runs (`data.kind: table`, datablame.tabular) behind the API: attribute, verify, the
tabular methods' listing and `datablame demo --tabular`. Part of the api layer; `datablame.api`
re-exports these and dispatches a table config to them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datablame import __version__
from datablame.config_tabular import TabularRunConfig
from datablame.errors import DatablameError
from datablame.layout import RunLayout
from datablame.report import AttributionResult


def _table_run_dir(cfg: TabularRunConfig) -> Path:
    """The run directory, refusing one that holds a text run (unless output.overwrite)."""
    from datablame.config import load_yaml
    from datablame.config_tabular import is_table_config

    layout = RunLayout(cfg.output.dir)
    if layout.resolved_config.is_file() and not cfg.output.overwrite:
        if not is_table_config(load_yaml(layout.resolved_config.read_text(encoding="utf-8"))):
            raise DatablameError(f"{layout.root} holds a text run, not a table run.",
                                 "set output.dir to another folder, or output.overwrite: true.")
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.resolved_config.write_text(cfg.to_yaml(), encoding="utf-8")
    return layout.root


def attribute_table(cfg: TabularRunConfig, *, methods: list[str] | None = None
                    ) -> tuple[AttributionResult, dict[str, Path]]:
    """A table run: train (or load) the model, score every train row for each query (the first
    `attribution.queries` test rows) with each tabular method, and write results.json, results.md,
    report.html and scores.npz under `<run>/attribution` (the previous result goes to its history)."""
    from datablame.report.history import publish_results
    from datablame.report.tabular import build_table_result, write_table_result
    from datablame.tabular.pipeline import run_attribution

    run = run_attribution(cfg, methods)
    run_dir = _table_run_dir(cfg)
    result = build_table_result(run, __version__)
    paths, previous = publish_results(RunLayout(run_dir).attribution_dir,
                                      lambda staging: write_table_result(result, run.scores, staging))
    if previous is not None:
        paths["previous_results"] = previous
    return result, paths


@dataclass
class TableVerifyReport:
    """What `verify` returns for a table run: `data` (tabular_verify.json's content, kind 'tabular')
    and the files written."""

    data: dict
    paths: dict[str, Path]


def verify_table(cfg: TabularRunConfig, *, methods: list[str] | None = None) -> TableVerifyReport:
    """Exact leave-one-out and/or the removal test (`verify.checks`) of a table run's methods,
    written to `<run>/verify/tabular_verify.json` and `.md` (see `datablame.tabular.loo`)."""
    from datablame.report.tabular import write_table_verify
    from datablame.tabular.pipeline import run_attribution, run_checks

    run = run_attribution(cfg, methods or cfg.verify.methods or None)
    data = run_checks(run, methods)
    data["loss_unit"] = ("cross-entropy (nats)" if run.table.task == "classification"
                         else "0.5 * squared error of the standardised target")
    return TableVerifyReport(data, write_table_verify(data, _table_run_dir(cfg)))


def describe_tabular_methods() -> list[dict]:
    """Every tabular method (name, needs, tasks, noise ranking, sign, unit, options) from the
    tabular registry (`datablame methods --tabular`)."""
    from datablame.tabular.pipeline import describe_tabular_methods as describe

    return describe()


def demo_table(output_dir: str = "runs/demo-table", overwrite: bool = False
               ) -> tuple[AttributionResult, dict[str, Path]]:
    """`datablame demo --tabular`: XGBoost on scikit-learn's bundled breast-cancer table (no
    download), every tree method on three test rows, the report; seconds on a laptop."""
    from datablame.config import parse_config

    cfg = parse_config({"name": "demo-table", "data": {"kind": "table", "dataset": "breast_cancer"},
                        "model": {"kind": "xgboost", "n_estimators": 50, "max_depth": 3},
                        "attribution": {"queries": 3, "top_k": 5},
                        "verify": {"max_train_rows": 80, "seeds": [0, 1]},
                        "output": {"dir": output_dir, "overwrite": overwrite}})
    assert isinstance(cfg, TabularRunConfig)
    return attribute_table(cfg)
