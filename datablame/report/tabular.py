"""A table run's results in the report layer's own form: an `AttributionResult` whose rows are
table rows (the label, then the feature values, as the row's text; both also as metadata; a
query's completion is its true label and the model's prediction), written as results.json, results.md and report.html like a text run's; and the verify
checks (exact leave-one-out, removal test) as <run>/verify/tabular_verify.json and .md.
"""

from __future__ import annotations

import datetime as _dt
import html as _html
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
              "features": t.feature_names, "notes": run.notes, "report": {},
              # for the per-feature table of report.html: each query's raw values and label, and the train
              # split's standard deviation of each numeric feature (what "close" is measured in)
              "query_rows": {q.query_id: {"features": query_feats[qi], "label": label_text(t, run.y_query[qi])}
                             for qi, q in enumerate(queries)},
              "feature_sd": {c: float(sd) for c, sd in t.encoder.stds.items()}},
        methods=methods, queries=queries, timing=dict(run.seconds),
    )


CLOSE_SD = 0.25  # a numeric value within this many train standard deviations of the query's is "close"
MAX_FEATURE_ROWS = 25  # blamed rows per query in the per-feature table (every one is in the method tables)
_FEATURE_CSS = ("\n.ftab{overflow-x:auto;margin:.5em 0 1.5em}.ftab table{width:auto;margin:0}"
                ".ftab td,.ftab th{white-space:nowrap}.ftab tr.query td{background:#eef3fb;font-weight:600}"
                ".ftab td.close{background:#d9f2d9}\n")


def _close(a: Any, b: Any, sd: float | None) -> bool:
    """Whether a blamed row's value is close to the query's: equal (categories, labels), or within
    CLOSE_SD train standard deviations (numbers)."""
    if a is None or b is None:
        return a is None and b is None
    if sd is not None and isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= CLOSE_SD * sd
    return a == b


def feature_table_html(result: AttributionResult, q: QueryResult) -> str:
    """The query row and each blamed row side by side, one column per feature (raw values), cells
    where the blamed row is close to the query highlighted (`_close`). Empty without feature values."""
    e = _html.escape
    qrow = result.data.get("query_rows", {}).get(q.query_id)
    if not qrow:
        return ""
    sds, qf = result.data.get("feature_sd", {}), qrow["features"]
    blamed: dict[str, dict[str, Any]] = {}  # row_id -> {row, by}
    for method, rows in q.rankings.items():
        for r in rows:
            blamed.setdefault(r.row_id, {"row": r, "by": []})["by"].append(f"{method} #{r.rank}")
    shown = list(blamed.values())[:MAX_FEATURE_ROWS]
    cols = list(qf)
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    parts = [f"<h3>Feature by feature</h3><p class='meta'>The query row and the rows blamed for it; shaded: the "
             f"same category or label, or a number within {CLOSE_SD:g} train standard deviations of the query's."
             + (f" The first {MAX_FEATURE_ROWS} of {len(blamed)} blamed rows." if len(blamed) > MAX_FEATURE_ROWS
                else "") + "</p>",
             f"<div class='ftab'><table><tr><th>row</th><th>label</th><th>blamed by</th>{head}</tr>",
             f"<tr class='query'><td><code>{e(q.query_id)}</code> (query)</td><td>{e(str(qrow['label']))}</td><td></td>"
             + "".join(f"<td class='num'>{e(str(qf[c]))}</td>" for c in cols) + "</tr>"]
    for b in shown:
        r, feats, label = b["row"], b["row"].metadata.get("features", {}), b["row"].metadata.get("label")
        cells = []
        for c in cols:
            cls = "num close" if _close(feats.get(c), qf[c], sds.get(c)) else "num"
            cells.append(f"<td class='{cls}'>{e(str(feats.get(c)))}</td>")
        lab = "close" if label is not None and label == qrow["label"] else ""
        parts.append(f"<tr><td><code>{e(r.row_id)}</code></td><td class='{lab}'>{e(str(label))}</td>"
                     f"<td>{e(', '.join(b['by']))}</td>" + "".join(cells) + "</tr>")
    parts.append("</table></div>")
    return "\n".join(parts)


def with_feature_tables(page: str, result: AttributionResult) -> str:
    """report.html with each query's per-feature table after its heading (inline CSS, no CDN)."""
    page = page.replace("</style>", _FEATURE_CSS + "</style>", 1)
    for q in result.queries:
        heading = f"<h2>{_html.escape(q.query_id)}</h2>"
        table = feature_table_html(result, q)
        if table and heading in page:
            head, sep, rest = page.partition(heading)
            # after the query's prompt and completion, before the first method's table
            cut = rest.find("<h3>")
            cut = len(rest) if cut < 0 else cut
            page = head + sep + rest[:cut] + table + "\n" + rest[cut:]
    return page


def write_table_result(result: AttributionResult, scores: dict[str, np.ndarray], out_dir: str | Path,
                       ) -> dict[str, Path]:
    """results.json/md, report.html and scores.npz under `out_dir` (the run's attribution folder)."""
    paths = write_result(result, out_dir)
    html_path = AttributionLayout(out_dir).report_html
    atomic_write_text(html_path, with_feature_tables(html_path.read_text(encoding="utf-8"), result))
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
    if "lds" in d:
        ld = d["lds"]
        lines += ["", f"## LDS ({ld['subsets']} retrainings on {ld['rows_per_subset']} of {ld['train_rows']} train "
                      "rows each)", "",
                  "Per query: Spearman over the subsets between the sum of the method's scores over the kept rows "
                  "and the subset model's -loss on the query; mean over queries, 95% bootstrap interval; > 0: the "
                  "scores predict retraining (higher score = the row lowered the query's loss), 0: chance.", "",
                  "| method | LDS | 95% CI | queries | undefined |", "|---|---:|---|---:|---:|"]
        for m, v in ld["per_method"].items():
            lines.append(f"| {m} | {_f(v['mean'])} | [{_f(v['ci_low'])}, {_f(v['ci_high'])}] | {v['n']} | "
                         f"{v['undefined']} |")
    for m, e in d.get("method_errors", {}).items():
        lines.append(f"- {m} failed: {e}")
    return "\n".join(lines) + "\n"


def write_table_verify(d: dict[str, Any], run_dir: str | Path) -> dict[str, Path]:
    out = RunLayout(run_dir).verify_dir
    return {"json": atomic_write_json(out / "tabular_verify.json", d),
            "markdown": atomic_write_text(out / "tabular_verify.md", verify_markdown(d))}
