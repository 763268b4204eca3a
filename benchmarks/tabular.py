"""Tabular attribution against exact leave-one-out (issue 19).

For each (dataset, model kind): a seeded subset of scikit-learn's bundled tables, exact LOO
retraining of every train row (truth[q, j] = rise of test query q's loss without row j), then
every applicable tabular method's Spearman / Pearson with that truth (mean over queries), top-10
overlap with LOO's top 10, the label-noise detection AUC (10% corrupted labels), and seconds; then
the removal test (`removal_test`) of the pair's best method by Spearman: retrain without its top 10
rows vs 10 random rows, 3 seeds, effect (mean query-loss rise, top minus random) with a 95% t interval.
Writes `benchmarks/results/tabular.json` and `tabular.md`.

    nice -n 10 .venv/bin/python benchmarks/tabular.py                    # 3 datasets x 3 models, minutes
    .venv/bin/python benchmarks/tabular.py --datasets wine --models linear xgboost --n-train 60
"""

from __future__ import annotations

import argparse
import datetime as dt
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
    load_bundled,
    make_model,
    methods_for,
    removal_test,
)
from datablame.tabular.noise import noise_detection
from datablame.utils.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
SMALL = {"mlp": {"hidden": 8, "epochs": 200}, "random_forest": {"n_estimators": 30},
         "xgboost": {"n_estimators": 30, "max_depth": 3}, "lightgbm": {"n_estimators": 30, "min_data_in_leaf": 5},
         "gradient_boosting": {"n_estimators": 30}, "linear": {"l2": 0.05}}


def run_pair(dataset: str, kind: str, methods: list[str] | None, n_train: int, n_test: int, seed: int,
             noise: float) -> dict:
    d = load_bundled(dataset, seed=seed).subset(n_train, n_test, seed=seed)
    model = make_model(kind, d.task, d.n_classes, seed, **SMALL.get(kind, {}))
    t0 = time.perf_counter()
    truth = exact_loo(model, d.X_train, d.y_train, d.X_test, d.y_test)
    loo_s = time.perf_counter() - t0
    fitted = model.clone().fit(d.X_train, d.y_train)
    names = [m for m in methods_for(fitted) if methods is None or m in methods]
    rows, all_scores = {}, {}
    for name in names:
        t0 = time.perf_counter()
        try:
            scores = attribute(name, fitted, d.X_train, d.y_train, d.X_test, d.y_test)
        except DatablameError as err:
            rows[name] = {"error": str(err)}
            continue
        secs = time.perf_counter() - t0
        all_scores[name] = scores
        rows[name] = {**agreement_with_loo(scores, truth), "seconds": secs}
    ok = [n for n in names if "error" not in rows[n]]
    for name, res in noise_detection(model, d.X_train, d.y_train, ok, fraction=noise, seed=seed).items():
        rows[name]["noise_auc"] = res["auc"]
        rows[name]["noise_precision_at_k"] = res["precision_at_k"]
    best = max((n for n in ok if n != "random"), key=lambda n: rows[n]["spearman"])
    removal = {"method": best, **removal_test(model, d.X_train, d.y_train, d.X_test, d.y_test, all_scores[best], k=10,
                                              seeds=(0, 1, 2))}
    return {"dataset": dataset, "model": kind, "task": d.task, "n_train": len(d.y_train), "n_test": len(d.y_test),
            "loo_seconds": loo_s, "test_loss": float(fitted.loss(d.X_test, d.y_test).mean()), "methods": rows,
            "removal": removal}


def best_per_model(results: list[dict]) -> dict[str, dict]:
    """The method with the highest mean Spearman with LOO over the datasets, per model kind."""
    out = {}
    for kind in sorted({r["model"] for r in results}):
        acc: dict[str, list[float]] = {}
        for r in results:
            if r["model"] == kind:
                for m, v in r["methods"].items():
                    if "spearman" in v and m != "random":
                        acc.setdefault(m, []).append(v["spearman"])
        full = {m: float(np.mean(v)) for m, v in acc.items() if len(v) == max(map(len, acc.values()))}
        best = max(full, key=full.get)
        out[kind] = {"method": best, "mean_spearman": full[best]}
    return out


def markdown(report: dict) -> str:
    lines = ["# Tabular attribution vs exact leave-one-out", "",
             f"datablame {report['version']}, {report['date']}; {report['n_train']} train rows, {report['n_test']} "
             f"test queries per dataset (seed {report['seed']}); label noise: {report['noise']:.0%} of train labels "
             "corrupted. Spearman / Pearson: mean over queries of the correlation with the LOO change of the "
             "query's loss; top-10: share of the method's top 10 rows in LOO's top 10.", "",
             "| dataset | model | method | Spearman | Pearson | top-10 | noise AUC | seconds |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        for m, v in r["methods"].items():
            if "error" in v:
                lines.append(f"| {r['dataset']} | {r['model']} | {m} | n/a | n/a | n/a | n/a | n/a |")
                continue
            lines.append(f"| {r['dataset']} | {r['model']} | {m} | {v['spearman']:.3f} | {v['pearson']:.3f} | "
                         f"{v['top10_overlap']:.2f} | {v.get('noise_auc', float('nan')):.3f} | {v['seconds']:.2f} |")
    lines += ["", "Best method per model kind (mean Spearman with LOO over the datasets, random excluded):", ""]
    lines += [f"- **{k}**: `{v['method']}` ({v['mean_spearman']:.3f})" for k, v in report["best"].items()]
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["breast_cancer", "wine", "diabetes"])
    p.add_argument("--models", nargs="+", default=["mlp", "xgboost", "random_forest"])
    p.add_argument("--methods", nargs="+", default=None, help="default: every method that applies")
    p.add_argument("--n-train", type=int, default=100)
    p.add_argument("--n-test", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "tabular")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for ds in args.datasets:
        for kind in args.models:
            t0 = time.perf_counter()
            results.append(run_pair(ds, kind, args.methods, args.n_train, args.n_test, args.seed, args.noise))
            print(f"{ds} / {kind}: {time.perf_counter() - t0:.1f} s", flush=True)
    report = {"version": __version__, "date": dt.datetime.now().isoformat(timespec="seconds"),
              "machine": platform.platform(), "n_train": args.n_train, "n_test": args.n_test, "seed": args.seed,
              "noise": args.noise, "results": results, "best": best_per_model(results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), report)
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
