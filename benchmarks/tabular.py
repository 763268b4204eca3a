"""Tabular attribution against exact leave-one-out and LDS (issue 19).

For each (dataset, model kind): a seeded subset of scikit-learn's bundled tables, exact LOO
retraining of every train row (truth[q, j] = rise of test query q's loss without row j), then
every applicable tabular method's Spearman / Pearson with that truth (mean over queries), top-10
overlap with LOO's top 10, LDS over M random half-subsets (`datablame.tabular.lds`: Spearman per
query of the summed scores of the kept rows vs the subset model's -loss, mean with a 95% bootstrap
interval), the label-noise detection AUC (10% corrupted labels), and seconds; then the removal test
(`removal_test`) of the pair's best method by Spearman: retrain without its top 10 rows vs 10
random rows, 3 seeds, effect (mean query-loss rise, top minus random) with a 95% t interval.
A method whose kind fits the model but that a library limit rules out (shap on a multi-class
scikit-learn GradientBoostingClassifier) is recorded as skipped, with the reason.
Writes `benchmarks/results/tabular.json`, `tabular.md` and `tabular.png`. The machine is shared:
the JSON records its load and cores, and wall times are upper bounds.

    nice -n 10 .venv/bin/python benchmarks/tabular.py                    # 3 datasets x 5 models, minutes
    .venv/bin/python benchmarks/tabular.py --datasets wine --models linear xgboost --n-train 60
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from datablame import __version__
from datablame.errors import DatablameError
from datablame.tabular import (
    agreement_with_loo,
    attribute,
    exact_loo,
    lds_check,
    load_bundled,
    make_model,
    methods_for,
    removal_test,
    skipped_for,
)
from datablame.tabular.noise import noise_detection
from datablame.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
SMALL = {"mlp": {"hidden": 8, "epochs": 200}, "random_forest": {"n_estimators": 30},
         "xgboost": {"n_estimators": 30, "max_depth": 3}, "lightgbm": {"n_estimators": 30, "min_data_in_leaf": 5},
         "gradient_boosting": {"n_estimators": 30}, "linear": {"l2": 0.05}}


def run_pair(dataset: str, kind: str, methods: list[str] | None, n_train: int, n_test: int, seed: int,
             noise: float, lds_subsets: int, lds_fraction: float) -> dict:
    d = load_bundled(dataset, seed=seed).subset(n_train, n_test, seed=seed)
    model = make_model(kind, d.task, d.n_classes, seed, **SMALL.get(kind, {}))
    t0 = time.perf_counter()
    truth = exact_loo(model, d.X_train, d.y_train, d.X_test, d.y_test)
    loo_s = time.perf_counter() - t0
    fitted = model.clone().fit(d.X_train, d.y_train)
    names = [m for m in methods_for(fitted) if methods is None or m in methods]
    rows: dict[str, dict] = {name: {"skipped": why} for name, why in skipped_for(fitted).items()
                             if methods is None or name in methods}
    all_scores = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            scores = attribute(name, fitted, d.X_train, d.y_train, d.X_test, d.y_test)
        except DatablameError as err:
            rows[name] = {"skipped": str(err)}
            continue
        secs = time.perf_counter() - t0
        all_scores[name] = scores
        rows[name] = {**agreement_with_loo(scores, truth), "seconds": secs}
    ok = list(all_scores)
    lds = lds_check(model, d.X_train, d.y_train, d.X_test, d.y_test, all_scores, num_subsets=lds_subsets,
                    fraction=lds_fraction, seed=seed)
    for name, v in lds["per_method"].items():
        rows[name]["lds"] = {k: v[k] for k in ("mean", "ci_low", "ci_high", "n", "undefined")}
    for name, res in noise_detection(model, d.X_train, d.y_train, ok, fraction=noise, seed=seed).items():
        rows[name]["noise_auc"] = res["auc"]
        rows[name]["noise_precision_at_k"] = res["precision_at_k"]
    best = max((n for n in ok if n != "random"), key=lambda n: rows[n]["spearman"])
    removal = {"method": best, **removal_test(model, d.X_train, d.y_train, d.X_test, d.y_test, all_scores[best], k=10,
                                              seeds=(0, 1, 2))}
    return {"dataset": dataset, "model": kind, "task": d.task, "n_train": len(d.y_train), "n_test": len(d.y_test),
            "loo_seconds": loo_s, "lds_retrain_seconds": lds["retrain_seconds"],
            "test_loss": float(fitted.loss(d.X_test, d.y_test).mean()), "methods": rows, "removal": removal}


def _mean_over_datasets(results: list[dict], kind: str, metric) -> dict[str, float]:
    """{method: mean of metric(row) over the datasets} for the methods that ran on every dataset of
    the model kind (random excluded)."""
    acc: dict[str, list[float]] = {}
    n = 0
    for r in results:
        if r["model"] == kind:
            n += 1
            for m, v in r["methods"].items():
                if "skipped" not in v and m != "random":
                    acc.setdefault(m, []).append(metric(v))
    means = {m: float(np.mean([x for x in v if x == x])) for m, v in acc.items()
             if len(v) == n and any(x == x for x in v)}
    return means


def best_per_model(results: list[dict]) -> dict[str, dict]:
    """Per model kind: the method with the highest mean Spearman with LOO over the datasets, and the
    method with the highest mean LDS (methods that ran on every dataset; random excluded)."""
    out = {}
    for kind in sorted({r["model"] for r in results}):
        sp = _mean_over_datasets(results, kind, lambda v: v["spearman"])
        ld = _mean_over_datasets(results, kind, lambda v: v["lds"]["mean"])
        b_sp, b_ld = max(sp, key=sp.get), max(ld, key=ld.get)
        rnd = [v["lds"]["mean"] for r in results if r["model"] == kind for m, v in r["methods"].items()
               if m == "random"]
        out[kind] = {"method": b_sp, "mean_spearman": sp[b_sp], "lds_of_that_method": ld.get(b_sp),
                     "best_by_lds": b_ld, "mean_lds": ld[b_ld], "spearman_of_that_method": sp.get(b_ld),
                     "random_mean_lds": float(np.nanmean(rnd)) if rnd else None}
    return out


def _num(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _lds_text(v: dict) -> str:
    ld = v.get("lds")
    if not ld or ld["mean"] != ld["mean"]:
        return "n/a"
    return f"{ld['mean']:.3f} [{ld['ci_low']:.2f}, {ld['ci_high']:.2f}]"


def markdown(report: dict) -> str:
    lines = ["# Tabular attribution vs exact leave-one-out and LDS", "",
             f"datablame {report['version']}, {report['date']}; {report['n_train']} train rows, {report['n_test']} "
             f"test queries per dataset (seed {report['seed']}); label noise: {report['noise']:.0%} of train labels "
             "corrupted. Spearman / Pearson: mean over queries of the correlation with the LOO change of the "
             "query's loss; top-10: share of the method's top 10 rows in LOO's top 10. LDS: "
             f"{report['lds_subsets']} retrainings on random {report['lds_fraction']:.0%} subsets of the train rows; "
             "per query the Spearman between the sum of the method's scores over the kept rows and the subset "
             "model's -loss (scores: higher = the row lowered the query's loss, so > 0 = right sign), mean over "
             "queries [95% bootstrap interval over queries]. Seconds: scoring only, wall time on a shared machine "
             f"(load {report['machine']['loadavg_at_start']}, {report['machine']['cpu_count']} cores): upper bounds.",
             "", "| dataset | model | method | Spearman | Pearson | top-10 | LDS [95% CI] | noise AUC | seconds |",
             "|---|---|---|---:|---:|---:|---|---:|---:|"]
    skipped = []
    for r in report["results"]:
        for m, v in r["methods"].items():
            if "skipped" in v:
                lines.append(f"| {r['dataset']} | {r['model']} | {m} | skipped | | | | | |")
                skipped.append(f"- {r['dataset']} / {r['model']} / `{m}`: {v['skipped']}")
                continue
            lines.append(f"| {r['dataset']} | {r['model']} | {m} | {v['spearman']:.3f} | {v['pearson']:.3f} | "
                         f"{v['top10_overlap']:.2f} | {_lds_text(v)} | {v.get('noise_auc', float('nan')):.3f} | "
                         f"{v['seconds']:.2f} |")
    if skipped:
        lines += ["", "Skipped (the method's model kind fits, a library limit rules it out):", ""] + skipped
    lines += ["", "Best method per model kind (mean over the datasets, among the methods that ran on all of them: "
              "random, the classification-only knn_shapley and a skipped method are left out; tabular.png "
              "averages each method over the datasets it ran on):", "", "| model | best by Spearman with LOO | Spearman | its LDS | best by LDS | LDS | "
              "its Spearman | random's LDS |", "|---|---|---:|---:|---|---:|---:|---:|"]
    for k, v in report["best"].items():
        lines.append(f"| {k} | `{v['method']}` | {_num(v['mean_spearman'])} | {_num(v['lds_of_that_method'])} | "
                     f"`{v['best_by_lds']}` | {_num(v['mean_lds'])} | {_num(v['spearman_of_that_method'])} | "
                     f"{_num(v['random_mean_lds'])} |")
    lines += ["", "Removal test of each pair's best method (by Spearman): retrain without its top 10 rows vs 10 "
              "random rows, seeds 0-2; effect = mean test-loss rise (top) minus (random), in the model's loss unit "
              "(nats, or half squared standardised error), 95% t interval over the seeds; > 0: the rows mattered.", "",
              "| dataset | model | method | top-10 rise | random-10 rise | effect | 95% CI |",
              "|---|---|---|---:|---:|---:|---|"]
    for r in report["results"]:
        v = r["removal"]
        lines.append(f"| {r['dataset']} | {r['model']} | {v['method']} | {v['top_k_rise']:.4f} | "
                     f"{v['random_k_rise']:.4f} | {v['effect']:.4f} | [{v['effect_low']:.4f}, {v['effect_high']:.4f}] |")
    return "\n".join(lines) + "\n"


def plot(report: dict) -> bytes:
    """Two heat maps (method x model kind): mean Spearman with LOO and mean LDS over the datasets."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(report["best"])
    methods = sorted({m for r in report["results"] for m, v in r["methods"].items() if "skipped" not in v})
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.3 * len(kinds) * 2, 0.45 * len(methods) + 2), sharey=True)
    for ax, (title, metric) in zip(axes, [("Spearman with exact LOO", lambda v: v["spearman"]),
                                          ("LDS (half subsets)", lambda v: v["lds"]["mean"])], strict=True):
        grid = np.full((len(methods), len(kinds)), np.nan)
        for j, kind in enumerate(kinds):
            vals: dict[str, list[float]] = {}
            for r in report["results"]:
                if r["model"] == kind:
                    for m, v in r["methods"].items():
                        if "skipped" not in v:
                            vals.setdefault(m, []).append(metric(v))
            for m, v in vals.items():
                grid[methods.index(m), j] = np.nanmean(v)
        im = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        for (i, j), x in np.ndenumerate(grid):
            if x == x:
                ax.text(j, i, f"{x:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right")
        ax.set_yticks(range(len(methods)), methods)
        ax.set_title(f"{title}\n(mean over the datasets the method ran on; blank: n/a)", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["breast_cancer", "wine", "diabetes"])
    p.add_argument("--models", nargs="+", default=["mlp", "xgboost", "lightgbm", "gradient_boosting",
                                                   "random_forest"])
    p.add_argument("--methods", nargs="+", default=None, help="default: every method that applies")
    p.add_argument("--n-train", type=int, default=100)
    p.add_argument("--n-test", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--lds-subsets", type=int, default=50, help="M: retrainings for LDS")
    p.add_argument("--lds-fraction", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "tabular")
    p.add_argument("--from-json", action="store_true", help="rewrite the .md and .png from the existing .json")
    args = p.parse_args(argv)
    if args.from_json:
        import json

        report = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))
        atomic_write_text(args.out.with_suffix(".md"), markdown(report))
        atomic_write_bytes(args.out.with_suffix(".png"), plot(report))
        return report
    torch.set_num_threads(1)
    load0, t_all = os.getloadavg(), time.perf_counter()
    results = []
    for ds in args.datasets:
        for kind in args.models:
            t0 = time.perf_counter()
            results.append(run_pair(ds, kind, args.methods, args.n_train, args.n_test, args.seed, args.noise,
                                    args.lds_subsets, args.lds_fraction))
            results[-1]["pair_seconds"] = time.perf_counter() - t0
            print(f"{ds} / {kind}: {results[-1]['pair_seconds']:.1f} s", flush=True)
    report = {"version": __version__, "date": dt.datetime.now().isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": 1,
                          "loadavg_at_start": [round(x, 2) for x in load0],
                          "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                          "note": "shared machine (2 cores, several jobs): every wall time is an upper bound"},
              "datasets": args.datasets, "models": args.models,
              "n_train": args.n_train, "n_test": args.n_test, "seed": args.seed, "noise": args.noise,
              "lds_subsets": args.lds_subsets, "lds_fraction": args.lds_fraction,
              "size_note": (f"each dataset is cut to a seeded {args.n_train} train rows and {args.n_test} test "
                            "queries (exact LOO = one retraining per train row) and the models are small "
                            "(benchmarks/tabular.py SMALL) to keep the grid to minutes on a shared machine"),
              "wall_seconds": time.perf_counter() - t_all, "results": results, "best": best_per_model(results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), report)
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))
    atomic_write_bytes(args.out.with_suffix(".png"), plot(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
