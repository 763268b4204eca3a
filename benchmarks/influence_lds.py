"""LDS of our projected EKFAC (default and variants) vs kronfluence, trak and grad_dot on one
planted run: one training, one LDS sweep of M subset models, every method scored against it.

The run is a small planted corpus (paraphrased plants + lexical decoys, `variant`
paraphrase: 201 rows, 17 queries) with a 2-layer tiny Llama (hidden 64, intermediate 128;
MLP gate/up/down_proj, 8192 weights per module, so the default 32 x 32 projection keeps 1/8).
The M subset models (alpha 0.5) are trained once and cached under <run>/lds/jobs by the LDS
machinery (`datablame.verify.sweep.run_jobs`): a rerun, or any new method variant, reuses
them. Each method is then fitted and scored on fresh inputs (no saved factors, features
recomputed), timed, with its peak RSS above the start; per-query LDS = Spearman over the M
subsets of (sum of the method's scores over the subset's rows) vs (minus the subset model's
query loss), exactly `datablame.verify.lds.lds_scores`.

Writes benchmarks/results/influence_lds.json: per method LDS (mean, 95% bootstrap CI over
queries), per-query LDS, seconds and peak memory; the paired bootstrap over queries of
(ekfac variant - kronfluence); and (--trak-ensemble) benchmarks/results/trak_ensemble.json +
trak_ensemble.png: trak's LDS vs ensemble size (last N checkpoints; N independently trained models), with cost.

    .venv/bin/python benchmarks/influence_lds.py               # ~10 min on 2 shared CPU cores (sweep ~1-5 min)
    .venv/bin/python benchmarks/influence_lds.py --seed 1 --run runs/influence-lds-seed1   # a second run
    .venv/bin/python benchmarks/influence_lds.py --only ekfac  # rescore some methods (reuses the sweep)
    .venv/bin/python benchmarks/influence_lds.py --only none --trak-ensemble   # trak_ensemble.json/.png

With influence_lds_seed<N>.json present, the seed-0 run also writes `pooled_over_runs`: the
paired differences over the queries of all runs.

The cores are shared with other jobs (load average recorded): wall times are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import command_line, lds_sweep, now  # noqa: E402

from datablame import __version__, api  # noqa: E402
from datablame.bench.measure import measure  # noqa: E402
from datablame.config import ProjectionConfig, parse_config  # noqa: E402
from datablame.layout import RunLayout  # noqa: E402
from datablame.utils.io import atomic_write_json  # noqa: E402
from datablame.verify.lds import lds_scores  # noqa: E402
from datablame.verify.stats import bootstrap_mean  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PLANTED = {"n_entities": 20, "n_facts": 16, "plants_per_fact": 3, "decoys_per_fact": 3,
           "background_per_entity": 5, "poison_facts": 1, "poison_rows": 2, "poison_true_rows": 3}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 1024}

# (label, method, options, projection: "default", or k (k x k; None = identity), or ProjectionConfig fields)
DEFAULT = "default"
VARIANTS: list[tuple[str, str, dict, Any]] = [
    ("ekfac", "ekfac", {}, DEFAULT),
    ("kronfluence", "kronfluence", {}, DEFAULT),
    ("trak", "trak", {"checkpoints": "last"}, DEFAULT),
    ("grad_dot", "grad_dot", {}, DEFAULT),
    ("ekfac k=64", "ekfac", {}, 64),
    ("ekfac k=128", "ekfac", {}, 128),
    ("ekfac identity", "ekfac", {}, None),
    ("ekfac damping_scale=0.01", "ekfac", {"damping_scale": 0.01}, DEFAULT),
    ("ekfac damping_scale=0.001", "ekfac", {"damping_scale": 0.001}, DEFAULT),
    ("ekfac damping_scale=1", "ekfac", {"damping_scale": 1.0}, DEFAULT),
    ("kfac (no eigenvalue correction)", "kfac", {}, DEFAULT),
    ("kfac identity", "kfac", {}, None),
    ("ekfac identity damping_scale=0.01", "ekfac", {"damping_scale": 0.01}, None),
    ("ekfac projection seed=1", "ekfac", {}, {"seed": 1}),
    ("ekfac projection seed=2", "ekfac", {}, {"seed": 2}),
    ("ekfac projection seed=3", "ekfac", {}, {"seed": 3}),
    ("ekfac rademacher projection", "ekfac", {}, {"kind": "rademacher"}),
    ("ekfac fisher=true", "ekfac", {"fisher": "true"}, DEFAULT),
    ("kronfluence fisher=true", "kronfluence", {"empirical_fisher": False}, DEFAULT),
]


def build_config(out: Path, epochs: float, seed: int = 0):
    """The bench preset's planted paraphrase run, resized (corpus and model) for one LDS sweep."""
    base = api.bench_config("planted", out, size="small", variant="paraphrase", epochs=epochs, seed=seed)
    raw = base.model_dump(mode="json", exclude_none=True)
    raw["data"]["planted"] = {**raw["data"]["planted"], **PLANTED}
    raw["model"]["tiny"] = {**raw["model"]["tiny"], **TINY}
    raw["training"]["save_steps"] = max(1, raw["training"]["save_steps"] // 2)  # ~8 checkpoints (trak ensembles)
    return parse_config(raw, source="<benchmarks/influence_lds.py>")


def score(cfg, method: str, options: dict, k) -> tuple[np.ndarray, dict]:
    """Fit + score on fresh inputs (no saved factors, features recomputed): scores, seconds, peak RSS."""
    from datablame.methods import run_method

    inputs = api.prepare_inputs(cfg)[0]
    inputs.work_dir = None
    if k != DEFAULT:
        fields = k if isinstance(k, dict) else {"k_in": k, "k_out": k}
        inputs.attribution = inputs.attribution.model_copy(update={"projection": ProjectionConfig(**fields)})
    got = measure(lambda: run_method(inputs, method, options).scores)
    return np.asarray(got.value, dtype=float), {
        "seconds": got.seconds, "peak_rss_mb": None if got.peak_bytes is None else got.peak_bytes / 2**20}


def summary(vals: np.ndarray, n_boot: int = 2000) -> dict:
    iv = bootstrap_mean(vals, n_boot=n_boot, seed=0)
    return {"lds": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "queries": iv.n}


def independent_models(cfg, n: int, root: Path) -> list[tuple[Path, float]]:
    """n models trained on all rows from the run's initial weights with data-order seeds
    1..n (no checkpoints); reused when already saved. (model dir, training seconds) each."""
    from datablame.layout import RunLayout
    from datablame.models import load_model
    from datablame.train import finetune

    inputs = api.prepare_inputs(cfg)[0]
    base = RunLayout(cfg.output.dir).base_model
    out = []
    for seed in range(1, n + 1):
        where = root / f"seed-{seed}"
        done = where / "seconds.json"
        if not done.is_file():
            loaded = load_model(cfg.model, path_override=str(base), seed=seed)
            tcfg = cfg.training.model_copy(update={"seed": seed, "save_steps": 10**9, "logging_steps": 10**9,
                                                   "report_to": [], "resume": False})
            res = finetune(loaded.model, loaded.tokenizer, inputs.corpus, tcfg, cfg.model, where, show_progress=False)
            done.write_text(json.dumps({"train_seconds": res.seconds, "final": str(res.final_dir)}))
        info = json.loads(done.read_text())
        out.append((Path(info["final"]), float(info["train_seconds"])))
    return out


def trak_ensemble(cfg, masks, losses, query_ids, n_models: int) -> dict:
    """trak over (a) the last N checkpoints of the run and (b) N independently trained models
    (the run's final model + N-1 seeds), N = 1, 2, 4, ...: LDS and cost."""
    from datablame.features.checkpoints import select_checkpoints

    inputs = api.prepare_inputs(cfg)[0]
    n_ckpt = len(select_checkpoints(inputs, "all"))
    curves: dict[str, list[dict]] = {"checkpoints": [], "independent_models": []}

    def add(curve: str, n: int, options: dict, train_s: float) -> None:
        s, cost = score(cfg, "trak", options, DEFAULT)
        per_q = lds_scores(s, masks, losses)
        row = {"models": n, **summary(per_q), **cost, "train_seconds": train_s,
               "seconds_per_model": (cost["seconds"] + train_s) / n,
               "per_query": dict(zip(query_ids, map(float, per_q), strict=True))}
        curves[curve].append(row)
        print(f"  trak {curve} x{n:<2d} LDS {row['lds']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
              f"  score {cost['seconds']:.1f} s + train {train_s:.0f} s", flush=True)

    for n in sorted({n for n in (1, 2, 4, 8, 16) if n <= n_ckpt} | {n_ckpt}):
        add("checkpoints", n, {"checkpoints": n}, 0.0)
    extra = independent_models(cfg, n_models - 1, Path(str(cfg.output.dir) + "-trak-models"))
    final = RunLayout(cfg.output.dir).final_model
    for n in sorted({n for n in (1, 2, 4, 8) if n <= n_models} | {n_models}):
        members = [final] + [m for m, _ in extra[: n - 1]]
        add("independent_models", n, {"models": [str(m) for m in members]}, sum(t for _, t in extra[: n - 1]))
    return {"checkpoints_available": n_ckpt, "curves": curves,
            "cost_note": "seconds: fit+score of trak with that ensemble (features of every member); train_seconds: "
                         "training the extra independent models (the run's own model is not counted); "
                         "seconds_per_model = (seconds + train_seconds) / N"}


def plot_ensemble(curves: dict[str, list[dict]], path: Path, ref: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax2 = ax.twinx()
    for (curve, rows), color in zip(curves.items(), ("tab:blue", "tab:green"), strict=False):
        n = np.array([r["models"] for r in rows])
        m = np.array([r["lds"] for r in rows])
        lo, hi = np.array([r["ci_low"] for r in rows]), np.array([r["ci_high"] for r in rows])
        shift = 1.04 if curve == "independent_models" else 1.0
        ax.errorbar(n * shift, m, yerr=[m - lo, hi - m], marker="o", capsize=4, color=color,
                    label=f"LDS, {curve.replace('_', ' ')} (95% CI)")
        ax2.plot(n, [r["seconds_per_model"] for r in rows], color=color, marker="s", ls=":", alpha=0.7,
                 label=f"s per model, {curve.replace('_', ' ')}")
    if ref is not None:
        ax.axhline(ref["lds"], color="gray", ls="--", label=f"kronfluence LDS {ref['lds']:.3f}")
    ax.set_xscale("log", base=2)
    ticks = sorted({r["models"] for rows in curves.values() for r in rows})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("models in the trak ensemble (checkpoints of one run, or independently trained)")
    ax.set_ylabel("LDS (M = 20 subsets)")
    ax2.set_ylabel("s per model (train + featurize + score)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=7)
    ax.set_title("TRAK: LDS and cost vs ensemble size (planted paraphrase run)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def pool_runs(paths: list[Path]) -> dict:
    """Paired (variant - kronfluence) per query, pooled over the runs of `paths` (each query is
    paired with its own run's kronfluence), mean with a 95% bootstrap CI over all queries."""
    runs = [json.loads(p.read_text()) for p in paths if p.is_file()]
    labels = [x for x in runs[0]["methods"] if x != "kronfluence" and all(x in r["methods"] for r in runs)]
    out = {"runs": [str(p.name) for p in paths if p.is_file()], "definition": "per-query LDS(variant) - "
           "LDS(kronfluence) of the same run, pooled over runs; 95% bootstrap CI over queries (5000)"}
    for label in labels:
        d = np.concatenate([np.array([r["methods"][label]["per_query"][q] - r["methods"]["kronfluence"]["per_query"][q]
                                      for q in r["methods"]["kronfluence"]["per_query"]]) for r in runs])
        iv = bootstrap_mean(d, n_boot=5000, seed=0)
        lds = float(np.mean([r["methods"][label]["lds"] for r in runs]))
        out[label] = {"mean_diff": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "queries": iv.n,
                      "lds_mean_over_runs": lds}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/influence-lds")
    ap.add_argument("--subsets", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--epochs", type=float, default=12)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="corpus + training seed (results file gets a _seed<N> suffix)")
    ap.add_argument("--only", default=None, help="comma-separated labels (or method names) to (re)score; "
                    "the others are kept from the previous JSON")
    ap.add_argument("--trak-ensemble", action="store_true", help="also write trak_ensemble.json/.png")
    ap.add_argument("--trak-models", type=int, default=8, help="independently trained models for the trak curve")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load_start = os.getloadavg()
    cfg = build_config(Path(args.run), args.epochs, args.seed)
    suffix = f"_seed{args.seed}" if args.seed else ""
    t0 = time.perf_counter()
    api.train(cfg)
    train_s = time.perf_counter() - t0
    masks, losses, sweep_info = lds_sweep(cfg, args.subsets, args.alpha, args.num_cpus)
    query_ids = [q.query_id for q in api.prepare_inputs(cfg)[0].queries]
    out_path = RESULTS / f"influence_lds{suffix}.json"
    previous = json.loads(out_path.read_text()) if out_path.is_file() and args.only else {}
    if sweep_info["trained"] == 0 and previous.get("lds", {}).get("trained"):
        sweep_info = {**sweep_info, "first_sweep": {k: previous["lds"][k] for k in ("trained", "sweep_s")}}
    elif sweep_info["trained"] == 0 and previous.get("lds", {}).get("first_sweep"):
        sweep_info = {**sweep_info, "first_sweep": previous["lds"]["first_sweep"]}
    methods: dict[str, dict] = dict(previous.get("methods", {}))
    wanted = None if args.only is None else set(args.only.split(","))
    kept: dict[str, np.ndarray] = {}
    for label, method, options, k in VARIANTS:
        if wanted is not None and label not in wanted and method not in wanted:
            continue
        s, cost = score(cfg, method, options, k)
        kept[label] = s
        per_q = lds_scores(s, masks, losses)
        methods[label] = {"method": method, "options": options, "projection": {"k_in": 32, "k_out": 32} if k == DEFAULT
                          else k if isinstance(k, dict) else {"k_in": k, "k_out": k},
                          **summary(per_q), **cost, "per_query": dict(zip(query_ids, map(float, per_q), strict=True))}
        r = methods[label]
        print(f"{label:36s} LDS {r['lds']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]  {cost['seconds']:.1f} s  "
              f"{r['peak_rss_mb'] or 0:.0f} MB", flush=True)
    for kind, prefix in (("gaussian", "ekfac projection seed="),):
        seeds = ["ekfac"] + [f"{prefix}{i}" for i in (1, 2, 3)]
        if not all(x in methods for x in seeds):
            continue
        # the spread over projection seeds: mean of the 4 per-seed LDS per query
        per_q = np.mean([[methods[x]["per_query"][q] for q in query_ids] for x in seeds], axis=0)
        methods[f"ekfac {kind} 32x32, mean LDS over 4 projection seeds"] = {
            "method": "ekfac", "options": {}, "projection": f"{kind} 32x32, seeds 0-3 (per-query LDS averaged)",
            **summary(per_q), "seconds": float(np.mean([methods[x]["seconds"] for x in seeds])),
            "peak_rss_mb": None, "per_query": dict(zip(query_ids, map(float, per_q), strict=True))}
        if all(x in kept for x in seeds):  # scores averaged over the 4 projections (4096 floats/module)
            per_q = lds_scores(np.mean([kept[x] for x in seeds], axis=0), masks, losses)
            methods[f"ekfac {kind} 32x32, scores averaged over 4 projection seeds"] = {
                "method": "ekfac", "options": {}, "projection": f"{kind} 32x32, seeds 0-3, scores averaged",
                **summary(per_q), "seconds": sum(methods[x]["seconds"] for x in seeds), "peak_rss_mb": None,
                "per_query": dict(zip(query_ids, map(float, per_q), strict=True))}
    methods.pop("ekfac mean of 4 projection seeds", None)  # renamed
    paired = {}
    if "kronfluence" in methods:
        ref = np.array([methods["kronfluence"]["per_query"][q] for q in query_ids])
        for label, r in methods.items():
            if label == "kronfluence":
                continue
            d = np.array([r["per_query"][q] for q in query_ids]) - ref
            iv = bootstrap_mean(d, n_boot=5000, seed=0)
            paired[label] = {"mean_diff": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "queries": iv.n,
                             "wins": int(np.sum(d > 0)), "losses": int(np.sum(d < 0))}
    machine = {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "loadavg_start": load_start,
               "loadavg_end": os.getloadavg(), "note": "2 cores shared with other jobs: wall times are upper bounds"}
    data = {
        "what": "LDS (M subset models, alpha) of ekfac variants vs kronfluence, trak, grad_dot on one planted run",
        "run": {"corpus": "planted", "variant": "paraphrase", "seed": args.seed, "planted": PLANTED, "model": TINY,
                "rows": int(masks.shape[1]), "queries": len(query_ids), "epochs": args.epochs,
                "modules": "mlp gate/up/down_proj of both layers (6 modules, 64x192 each)", "train_s": train_s},
        "lds": {"subsets": args.subsets, "alpha": args.alpha, **sweep_info,
                "definition": "per query: Spearman over subset models of summed scores vs minus the subset "
                              "model's query loss (verify.lds.lds_scores); mean over queries, 95% percentile "
                              "bootstrap CI over queries"},
        "methods": methods,
        "paired_vs_kronfluence": {"definition": "per-query LDS(variant) - LDS(kronfluence), mean with a 95% "
                                                "paired bootstrap CI over queries (5000 resamples)", **paired},
        "machine": machine, "version": __version__, "date": now(), "command": command_line(),
    }
    if "tried_and_reverted" in previous:  # variants whose code was not kept (their numbers and why)
        data["tried_and_reverted"] = previous["tried_and_reverted"]
    others = sorted(RESULTS.glob("influence_lds_seed*.json"))
    atomic_write_json(out_path, data)
    if not suffix and others:  # this run + the other seeds' runs (their JSONs as last written)
        data["pooled_over_runs"] = pool_runs([out_path, *others])
        atomic_write_json(out_path, data)
    print(f"-> {out_path}")
    for label, p in paired.items():
        print(f"  {label:36s} - kronfluence {p['mean_diff']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]")
    if args.trak_ensemble:
        ens = trak_ensemble(cfg, masks, losses, query_ids, args.trak_models)
        ens.update({"what": "trak LDS vs the number of training checkpoints it ensembles (the last N)",
                    "run": data["run"], "lds": data["lds"], "kronfluence": methods.get("kronfluence", {}).get("lds"),
                    "machine": {**machine, "loadavg_end": os.getloadavg()}, "date": now(),
                    "command": command_line()})
        atomic_write_json(RESULTS / f"trak_ensemble{suffix}.json", ens)
        plot_ensemble(ens["curves"], RESULTS / f"trak_ensemble{suffix}.png", methods.get("kronfluence"))
        print(f"-> {RESULTS / f'trak_ensemble{suffix}.json'}, trak_ensemble{suffix}.png")


if __name__ == "__main__":
    main()
