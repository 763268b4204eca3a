"""How much do methods agree? Top-k overlap, Jaccard and Spearman between every pair (seed 004).

For each pair of methods and each query: the number of shared rows in the two top-k lists
(overlap, 0..k), their Jaccard index (|A∩B| / |A∪B|, 0..1) and the Spearman correlation of the
full score vectors over all rows (−1..1); each then averaged over queries. Written as
`comparison.json` (source of truth), `comparison.md` and `comparison.png` (three heatmaps).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from datablame.layout import AttributionLayout
from datablame.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

METRICS = ("overlap", "jaccard", "spearman")


def _topk(row: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-row, kind="stable")[:k].tolist())


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # a constant ranking has no correlation
    return float(spearmanr(a, b).statistic)


def compare_methods(scores: dict[str, np.ndarray], k: int) -> dict:
    """Pairwise agreement of score matrices [Q, R] that share queries and rows."""
    names = list(scores)
    shapes = {s.shape for s in scores.values()}
    if len(shapes) != 1:
        raise ValueError(f"score matrices differ in shape: { {n: s.shape for n, s in scores.items()} }")
    n_queries, n_rows = shapes.pop()
    k = min(k, n_rows)
    mats = {m: np.full((len(names), len(names)), np.nan) for m in METRICS}
    for i in range(len(names)):
        mats["overlap"][i, i], mats["jaccard"][i, i], mats["spearman"][i, i] = k, 1.0, 1.0
    pairs = []
    for (i, a), (j, b) in combinations(enumerate(names), 2):
        ov, jac, rho = [], [], []
        for q in range(n_queries):
            ta, tb = _topk(scores[a][q], k), _topk(scores[b][q], k)
            ov.append(len(ta & tb))
            jac.append(len(ta & tb) / len(ta | tb))
            rho.append(_spearman(scores[a][q], scores[b][q]))
        vals = {"overlap": float(np.mean(ov)), "jaccard": float(np.mean(jac)), "spearman": float(np.nanmean(rho)) if not np.all(np.isnan(rho)) else float("nan")}
        for m, v in vals.items():
            mats[m][i, j] = mats[m][j, i] = v
        pairs.append({"a": a, "b": b, **vals})
    return {
        "k": k, "methods": names, "queries": n_queries, "rows": n_rows, "pairs": pairs,
        "matrices": {m: [[None if np.isnan(x) else float(x) for x in r] for r in mats[m]] for m in METRICS},
        "definitions": {
            "overlap": f"shared rows in the two top-{k} lists, mean over queries (0..{k})",
            "jaccard": f"|A∩B|/|A∪B| of the top-{k} sets, mean over queries (0..1)",
            "spearman": "Spearman correlation of the full score vectors over all rows, mean over queries (-1..1)",
        },
    }


def render_comparison_markdown(cmp: dict) -> str:
    lines = [f"# Method comparison (top-{cmp['k']}, {cmp['queries']} queries, {cmp['rows']} rows)", ""]
    lines += ["| method A | method B | top-k overlap | Jaccard | Spearman |", "|---|---|---|---|---|"]
    for p in cmp["pairs"]:
        lines.append(f"| {p['a']} | {p['b']} | {p['overlap']:.2f} | {p['jaccard']:.3f} | {p['spearman']:.3f} |")
    lines += ["", *(f"- {m}: {d}" for m, d in cmp["definitions"].items())]
    return "\n".join(lines) + "\n"


def plot_comparison(cmp: dict, path: Path) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = cmp["methods"]
    n = len(names)
    # cells must stay legible with many methods: each panel grows with n, and past 8 methods the
    # three panels stack vertically instead of shrinking side by side
    side = max(4.0, 0.42 * n + 2.2)
    wide = n <= 8
    fig, axes = plt.subplots(1 if wide else 3, 3 if wide else 1,
                             figsize=(3 * side + 1.5, side) if wide else (side + 1.5, 3 * side),
                             constrained_layout=True)
    ranges = {"overlap": (0, cmp["k"]), "jaccard": (0, 1), "spearman": (-1, 1)}
    font = 7 if n <= 12 else 6
    for ax, m in zip(axes, METRICS, strict=True):
        mat = np.array([[np.nan if x is None else x for x in r] for r in cmp["matrices"][m]], dtype=float)
        lo, hi = ranges[m]
        im = ax.imshow(mat, vmin=lo, vmax=hi, cmap="RdBu_r" if m == "spearman" else "viridis")
        ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        for i in range(n):
            for j in range(n):
                v = mat[i, j]
                if np.isnan(v):
                    continue
                t = (v - lo) / (hi - lo)  # position on the colour map: pick a text colour that reads on it
                dark = abs(2 * t - 1) > 0.5 if m == "spearman" else t < 0.6
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=font, color="w" if dark else "k")
        ax.set_title(m if m != "overlap" else f"top-{cmp['k']} overlap")
        fig.colorbar(im, ax=ax, shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_comparison(scores: dict[str, np.ndarray], k: int, out_dir: str | Path) -> dict[str, Path]:
    """comparison.json, comparison.md and comparison.png in `out_dir`."""
    layout = AttributionLayout(out_dir)
    cmp = compare_methods(scores, k)
    return {
        "comparison_json": atomic_write_json(layout.comparison_json, cmp),
        "comparison_md": atomic_write_text(layout.comparison_md, render_comparison_markdown(cmp)),
        "comparison_png": plot_comparison(cmp, layout.comparison_png),
    }
