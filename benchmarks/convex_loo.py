"""Convex sanity (BENCHMARKS.md item 4): influence functions vs actual leave-one-out retraining.

L2-regularised logistic regression on two classes of scikit-learn's bundled digits; the
influence of every training row on the highest-loss test rows, computed with the explicit
Hessian path of `datablame.curvature.hessian` (the one `hessian_influence` uses), against
refitting the model exactly without each row. Writes `benchmarks/results/convex_loo.json`
(Pearson, Spearman, per query) and `convex_loo.png` (predicted vs actual scatter).

    .venv/bin/python benchmarks/convex_loo.py                 # all ~250 rows, 5 test rows, ~20 s
    .venv/bin/python benchmarks/convex_loo.py --classes 3 8 --c 0.1 --queries 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from pathlib import Path

import numpy as np

from datablame import __version__
from datablame.bench.convex_loo import run_convex_loo
from datablame.utils.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def scatter(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred, act = np.asarray(res["predicted"]), np.asarray(res["actual"])
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for i, q in enumerate(res["per_query"]):
        ax.scatter(act[i], pred[i], s=10, alpha=0.7, label=f"test row {q['test_row']} (r = {q['pearson']:.4f})")
    lo, hi = float(min(act.min(), pred.min())), float(max(act.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="y = x")
    ax.set_xlabel("actual Δ test loss after leave-one-out refit (nats)")
    ax.set_ylabel("influence prediction: score / n (nats)")
    p = res["problem"]
    ax.set_title(f"Influence vs leave-one-out, logistic regression\ndigits {p['classes'][0]} vs {p['classes'][1]}, "
                 f"{res['rows_retrained']} rows, Pearson {res['pearson']:.4f}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, nargs=2, default=[1, 7])
    ap.add_argument("--c", type=float, default=1.0, help="inverse L2 strength (sum loss + ||w||^2 / 2C)")
    ap.add_argument("--queries", type=int, default=5, help="test rows (highest loss first)")
    ap.add_argument("--rows", type=int, default=None, help="training rows to leave out (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "convex_loo.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = run_convex_loo(tuple(args.classes), c=args.c, n_queries=args.queries, n_loo=args.rows, seed=args.seed, progress=True)
    res["seconds"] = time.perf_counter() - t0
    res["machine"] = {"platform": platform.platform(), "python": platform.python_version(), "datablame": __version__,
                      "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    res["command"] = "python benchmarks/convex_loo.py " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in
        {"classes": args.classes, "c": args.c, "queries": args.queries, "seed": args.seed}.items())
    png = args.out.with_suffix(".png")
    scatter(res, png)
    res["plot"] = png.name
    atomic_write_json(args.out, res)
    print(f"Pearson {res['pearson']:.4f} (pooled {res['pearson_pooled']:.4f}), Spearman {res['spearman']:.4f} "
          f"over {res['rows_retrained']} leave-one-out refits x {len(res['per_query'])} test rows -> {args.out}, {png}")


if __name__ == "__main__":
    main()
