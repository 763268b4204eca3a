"""How sure a ranking is: what the scores, the other methods and any retraining check can say.

Per query and method, in results.json (`queries[].confidence`) and the reports:

- `top_z`: the top row's robust z-score (score - median) / (1.4826 MAD) over the query's
  finite scores; `gap_z`: the mean robust z of the top-k rows minus what the top-k of as many
  pure-noise scores would reach (the expected normal order statistics), so a ranking of noise
  sits near 0 whatever the corpus size, and a top that stands out sits far above it.
  Descriptive, not calibrated: labelled "clear" (>= 3), "some" (>= 1) or "weak".
- `agreement`: for each other method run on the same query, the fraction of the top-k rows
  both name (`overlap`) and the Spearman correlation of the two score vectors over the rows
  both scored (`spearman`); `mean_overlap` summarises it.
- `checks`: when `datablame verify` or `datablame lds` ran on this run, their verdict and
  figure for this query and method (`verify`: the removal verdict, effect and interval per k;
  `lds`: the query's Spearman and the method's mean LDS with its interval). `attach_checks`
  reads them from the run directory; `verify` and `lds` call it again after they finish.

Rows known to be planted (the query's ground truth) or decoys in synthetic corpora get a
`mark` ("planted" / "decoy") in the rankings.
"""

from __future__ import annotations

import logging
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from datablame.layout import RunLayout
from datablame.report.results import AttributionResult
from datablame.utils.safe_load import read_json

log = logging.getLogger("datablame")

GAP_CLEAR, GAP_SOME = 3.0, 1.0  # gap_z labels (descriptive thresholds, in robust standard deviations)


def _strength(gap_z: float | None) -> str:
    if gap_z is None:
        return "unknown"
    return "clear" if gap_z >= GAP_CLEAR else "some" if gap_z >= GAP_SOME else "weak"


def _noise_top_mean(n: int, k: int) -> float:
    """Expected mean z of the k largest of n standard normal draws (Blom's approximation of the
    order statistics): what the top-k would score if every row were noise."""
    from scipy.stats import norm

    i = np.arange(1, k + 1)
    return float(norm.ppf((n - i + 1 - 0.375) / (n + 0.25)).mean())


def _separation(row: np.ndarray, k: int) -> dict[str, Any]:
    finite = row[np.isfinite(row)]
    n = len(finite)
    if n < 3:
        return {"top_z": None, "gap_z": None, "strength": "unknown", "rows_scored": int(n)}
    # robust centre and spread (median, MAD): the top rows must not widen their own yardstick
    center = float(np.median(finite))
    scale = 1.4826 * float(np.median(np.abs(finite - center))) or float(finite.std())
    if scale <= 0:
        return {"top_z": 0.0, "gap_z": 0.0, "strength": "weak", "rows_scored": int(n)}
    k = min(k, n - 1)
    top = np.sort(finite)[::-1][:k]
    topk_z = float(((top - center) / scale).mean())
    gap = topk_z - _noise_top_mean(n, k)
    return {"top_z": float((top[0] - center) / scale), "gap_z": gap, "strength": _strength(gap),
            "rows_scored": int(n)}


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3:
        return None
    ra = np.argsort(np.argsort(a[both], kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b[both], kind="stable"), kind="stable").astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def add_confidence(result: AttributionResult, scores: dict[str, np.ndarray], k: int,
                   truth: dict[str, list[str]] | None = None) -> None:
    """Fill `confidence` of every query of `result` from the score matrices, and mark planted /
    decoy rows in the rankings when the corpus is synthetic (`truth`: query_id -> row ids)."""
    names = list(scores)
    for qi, q in enumerate(result.queries):
        per_method = {m: {**_separation(np.asarray(scores[m][qi], dtype=np.float64), k), "agreement": {}}
                      for m in names}
        tops = {m: {r.row_id for r in q.rankings.get(m, [])} for m in names}
        for a, b in combinations(names, 2):
            overlap = len(tops[a] & tops[b]) / max(min(len(tops[a]), len(tops[b])), 1)
            rho = _spearman(np.asarray(scores[a][qi], float), np.asarray(scores[b][qi], float))
            per_method[a]["agreement"][b] = {"overlap": overlap, "spearman": rho}
            per_method[b]["agreement"][a] = {"overlap": overlap, "spearman": rho}
        for m in names:
            others = [v["overlap"] for o, v in per_method[m]["agreement"].items() if o != "random"]
            per_method[m]["mean_overlap"] = float(np.mean(others)) if others else None
        q.confidence = {"methods": per_method, "k": k}
        planted = set((truth or {}).get(q.query_id, []))
        for rows in q.rankings.values():
            for r in rows:
                if r.row_id in planted:
                    r.mark = "planted"
                elif truth and r.metadata.get("kind") == "decoy":
                    r.mark = "decoy"


def _verify_checks(path: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    data = read_json(path, what="verify result", fix="rerun `datablame verify`") if path.is_file() else None
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in (data or {}).get("per_query", []):
        eff = row.get("effect") or {}
        out.setdefault((row.get("query_id"), row.get("method")), []).append({
            "strategy": data.get("strategy", "removal"), "k": row.get("k"), "verdict": row.get("verdict"),
            "effect": eff.get("mean"), "ci_low": eff.get("low"), "ci_high": eff.get("high"),
            "p_value": row.get("p_value"),
            **({"interval_note": row["interval_note"]} if row.get("interval_note") else {}),
        })
    return out


def attach_checks(result: AttributionResult, run_dir: str | Path | None) -> bool:
    """Add the run's verify / LDS figures to each query's `confidence.checks`; True when any
    was found. Unreadable or foreign files are skipped with a log line, never fatal."""
    if run_dir is None:
        return False
    layout = RunLayout(run_dir)
    found = False
    verify: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for suffix in ("", "_flip"):
        try:
            for key, rows in _verify_checks(layout.verify_json(suffix)).items():
                verify.setdefault(key, []).extend(rows)
        except Exception as err:  # noqa: BLE001 - a damaged check file must not cost the report
            log.warning("ignoring %s: %s", layout.verify_json(suffix), err)
    lds: dict[str, dict[str, Any]] = {}
    try:
        data = read_json(layout.lds_json, what="LDS result", fix="rerun `datablame lds`") if layout.lds_json.is_file() else None
        lds = {t["method"]: t for t in (data or {}).get("table", []) if "lds" in t}
    except Exception as err:  # noqa: BLE001
        log.warning("ignoring %s: %s", layout.lds_json, err)
    for q in result.queries:
        methods = (q.confidence or {}).setdefault("methods", {})
        for m in q.rankings:
            checks: dict[str, Any] = {}
            if (q.query_id, m) in verify:
                checks["verify"] = verify[(q.query_id, m)]
            if m in lds and q.query_id in (lds[m].get("per_query") or {}):
                t = lds[m]
                checks["lds"] = {"query": t["per_query"][q.query_id], "mean": t["lds"],
                                 "ci_low": t.get("ci_low"), "ci_high": t.get("ci_high")}
            if checks:
                methods.setdefault(m, {})["checks"] = checks
                found = True
    return found


def confidence_line(method: str, c: dict[str, Any]) -> str:
    """One plain sentence for the views: separation, agreement, checks."""
    parts = []
    if c.get("gap_z") is not None:
        parts.append(f"top-k gap {c['gap_z']:.1f} sd ({c['strength']}), top row {c['top_z']:.1f} sd")
    if c.get("mean_overlap") is not None:
        parts.append(f"shares {100 * c['mean_overlap']:.0f}% of its top rows with the other methods")
    for v in (c.get("checks") or {}).get("verify", []):
        eff = "n/a" if v.get("effect") is None else f"{v['effect']:+.3g}"
        ci = "" if v.get("ci_low") is None or v.get("ci_high") is None else f", CI {v['ci_low']:+.3g} to {v['ci_high']:+.3g}"
        note = f"; {v['interval_note']}" if v.get("interval_note") else ""
        parts.append(f"verify k={v['k']}: {v['verdict']} (effect {eff} nats/token{ci}{note})")
    lds = (c.get("checks") or {}).get("lds")
    if lds:
        parts.append(f"LDS {lds['query']:.2f} on this query (mean {lds['mean']:.2f})")
    return f"{method}: " + ("; ".join(parts) if parts else "no evidence")
