"""A table run's results in the report layer's own form: an `AttributionResult` whose rows are
table rows (the label, then the feature values, as the row's text; both also as metadata; a
query's completion is its true label and the model's prediction), written as results.json, results.md and report.html like a text run's; and the verify
checks (exact leave-one-out, removal test) as <run>/verify/tabular_verify.json and .md.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from datablame.layout import AttributionLayout, RunLayout
from datablame.report.results import AttributionResult, QueryResult, RankedRow, top_k, write_result
from datablame.tabular.pipeline import (
    SIGN,
    TableRun,
    decode_rows,
    label_text,
    prediction_text,
    table_fingerprint,
)
from datablame.tabular.registry import get_method
from datablame.utils.io import atomic_save_npz, atomic_write_json, atomic_write_text

MAX_FEATURES_IN_TEXT = 40  # a row's text lists at most this many features (all are in its metadata)


def _features_text(values: dict[str, Any]) -> str:
    items = list(values.items())
    text = ", ".join(f"{k}={v}" for k, v in items[:MAX_FEATURES_IN_TEXT])
    return text + (f", … ({len(items) - MAX_FEATURES_IN_TEXT} more)" if len(items) > MAX_FEATURES_IN_TEXT else "")


def build_table_result(run: TableRun, version: str) -> AttributionResult:
    """The result of a table run: per query row, each method's top-k train rows with their features,
    label and score (sign and unit: each method's `unit`, higher = the row helped)."""
    t, k = run.table, run.cfg.attribution.top_k
    train_feats = decode_rows(t, t.X_train)
    query_feats = decode_rows(t, run.X_query)
    preds = prediction_text(t, run.model, run.X_query)
    queries = []
    for qi, pos in enumerate(run.queries):
        rankings = {}
        for name, mat in run.scores.items():
            rankings[name] = [
                RankedRow(rank=r + 1, row_id=f"train:{int(t.train_index[j])}", score=float(mat[qi, j]),
                          prompt=f"[{t.target} = {label_text(t, t.y_train[j])}] {_features_text(train_feats[j])}", completion="",
                          metadata={"features": train_feats[j], "label": label_text(t, t.y_train[j]),
                                    "source_row": int(t.train_index[j])})
                for r, j in enumerate(top_k(mat[qi], k))
            ]
        q = QueryResult(query_id=f"test:{int(t.test_index[pos])}", prompt=_features_text(query_feats[qi]),
                        completion=f" → {t.target} = {label_text(t, run.y_query[qi])}; the model predicts {preds[qi]}",
                        generated=False, rankings=rankings)
        q.behaviour = None
        queries.append(q)
    methods = [{"name": n, "sign": SIGN, "unit": get_method(n).unit, "needs": get_method(n).needs}
               for n in run.scores]
    losses = run.model.loss(run.X_query, run.y_query)
    return AttributionResult(
        version=version,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        config=run.cfg.model_dump(mode="json"),
        model={"source": f"{run.model.kind} ({run.source})", "kind": run.model.kind, "task": run.model.task,
               "fingerprint": table_fingerprint(t)[:8] + "-" + run.model.kind,
               "query_loss_mean": float(np.mean(losses)),
               "loss_unit": "cross-entropy (nats)" if t.task == "classification" else
                            "0.5 * squared error of the standardised target"},
        data={"kind": "table", "name": t.name, "target": t.target, "task": t.task, "classes": t.classes,
              "fingerprint": table_fingerprint(t), "rows": len(t.y_train), "test_rows": len(t.y_test),
              "features": t.feature_names, "notes": run.notes, "report": {}},
        methods=methods, queries=queries, timing=dict(run.seconds),
    )


def write_table_result(result: AttributionResult, scores: dict[str, np.ndarray], out_dir: str | Path,
                       ) -> dict[str, Path]:
    """results.json/md, report.html and scores.npz under `out_dir` (the run's attribution folder)."""
    paths = write_result(result, out_dir)
    paths["scores"] = atomic_save_npz(AttributionLayout(out_dir).scores_npz, scores)
    return paths


def _f(x: float) -> str:
    return "—" if x is None or x != x else f"{x:.4g}"


def verify_markdown(d: dict[str, Any]) -> str:
    lines = ["# datablame verify (table)", "",
             f"{d['queries']} test queries, {d['n_train']} train rows; loss unit: {d['loss_unit']}.", ""]
    if "loo" in d:
        lo = d["loo"]
        lines += [f"## Exact leave-one-out ({lo['retrainings']} retrainings on {lo['train_rows']} train rows)", "",
                  "Mean over queries of each method's correlation with the LOO rise of the query's loss "
                  "(the methods rescored on the same rows).", "",
                  "| method | Spearman | Pearson | top-k overlap |", "|---|---:|---:|---:|"]
        for m, v in lo["per_method"].items():
            ov = next(x for key, x in v.items() if key.startswith("top"))
            lines.append(f"| {m} | {_f(v['spearman'])} | {_f(v['pearson'])} | {_f(ov)} |")
        lines.append("")
    if "removal" in d:
        lines += ["## Removal test", "",
                  "Retrain without each method's top-k rows (highest mean score over the queries) vs k random rows, "
                  "per seed; effect = mean query-loss rise (top) minus (random), 95% t interval; > 0: the rows "
                  "mattered more than chance.", "",
                  "| method | k | seeds | top-k rise | random-k rise | effect | 95% CI |", "|---|---:|---:|---:|---:|---:|---|"]
        for m, v in d["removal"].items():
            lines.append(f"| {m} | {v['k']} | {v['seeds']} | {_f(v['top_k_rise'])} | {_f(v['random_k_rise'])} | "
                         f"{_f(v['effect'])} | [{_f(v['effect_low'])}, {_f(v['effect_high'])}] |")
    for m, e in d.get("method_errors", {}).items():
        lines.append(f"- {m} failed: {e}")
    return "\n".join(lines) + "\n"


def write_table_verify(d: dict[str, Any], run_dir: str | Path) -> dict[str, Path]:
    out = RunLayout(run_dir).verify_dir
    return {"json": atomic_write_json(out / "tabular_verify.json", d),
            "markdown": atomic_write_text(out / "tabular_verify.md", verify_markdown(d))}
