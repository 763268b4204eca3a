"""Every registered method on the demo corpus, from the one CLI command, in one comparison.

    .venv/bin/python benchmarks/methods_demo.py                 # train once (reused), attribute, report
    .venv/bin/python benchmarks/methods_demo.py --reuse         # report from the last attribution only
    .venv/bin/python benchmarks/methods_demo.py --only bm25,grad_cosine   # a subset (quick check)
    .venv/bin/python benchmarks/methods_demo.py --lds-subsets 8 --num-cpus 2    # the defaults

The `datablame demo` configuration (planted facts: 544 rows, 8 planted-fact queries; 4-layer
hidden-128 tiny Llama trained from scratch for 15 epochs) in its own run directory
(`runs/methods-demo`, YAML `runs/methods-demo.yaml`), with two changes: checkpoints every 170
steps (170, 340, 510: TracIn, TRAK and LESS ensemble over them) and the per-method options
in `OPTIONS` below (hessian_influence restricted to one layer). The model is trained once by
`datablame train --config runs/methods-demo.yaml` and reused afterwards; `datamodels` fits on
retrained subset models, so `datablame lds --subsets M` trains them first (once: the sweep is
cached and resumes); then ONE command

    datablame attribute --config runs/methods-demo.yaml --method <every method in METHODS>

ranks the rows with every method. That command writes results.json (with the fit+score
seconds of each method), scores.npz and the method comparison (comparison.json/md/png: top-10
overlap, Jaccard, Spearman) under runs/methods-demo/attribution; this script copies the
comparison to benchmarks/results/methods_demo_comparison.{json,md,png}, scores every method
against the planted ground truth with `datablame.metrics` (recall@10 and mAP with
bootstrap CIs over the queries) and writes benchmarks/results/methods_demo.{json,md}.

Seconds are wall seconds of fit+score inside that one process, in the order of `METHODS`:
work shared between methods (the gradient features of the attributed model, checkpoint
features, hidden states, the grad_cosine candidates of the judge) is paid by the first method
that needs it and reused by the later ones, as a user running them together would see. The
2 cores are shared with other jobs (load averages recorded), and torch runs on 1 thread
(OMP_NUM_THREADS=1), so walls are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from datablame.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
K = 10

# Order matters for the seconds (see the module docstring): shared work is paid by the first user.
METHODS = [
    "random", "bm25", "embedding_cosine",
    "grad_cosine", "grad_dot", "grad_tokenwise", "diag_influence", "kfac", "ekfac", "datainf", "kronfluence",
    "tracin", "trak", "less",
    "activation_similarity", "activation_gradient", "delta_h", "delta_h_grad", "causal_patching",
    "hessian_influence", "llm_judge", "datamodels",
]
EXCLUDED: dict[str, str] = {}
HESSIAN_LAYER = r"layers\.3\.mlp\.down_proj$"
OPTIONS: dict[str, dict] = {
    # the exact Hessian of the whole MLP (~5e5 weights) is beyond max_params and CG over it ran
    # > 15 min (bench runner's SKIP_BY_DEFAULT); one 128 x 344 layer (44,032 weights) is feasible
    "hessian_influence": {"pattern": HESSIAN_LAYER, "damping_scale": 3.0, "cg_tol": 1e-5},
}
NOTES = {
    "hessian_influence": f"restricted to one layer: pattern {HESSIAN_LAYER!r} (44,032 weights, CG solver); "
                         "the other gradient methods use all 12 MLP projections",
    "llm_judge": "local SmolLM2-135M-Instruct (GGUF, offline) rates the top-10 rows of grad_cosine per query; "
                 "every other row scores -1",
    "random": "the chance floor: expected recall@10 = 10 / 544",
    "datamodels": "ridge regression on the M subset models (random halves of the rows) that "
                  "`datablame lds` trained before the attribute command (not counted in its seconds); "
                  "with M = 8 models for 544 rows the weights are mostly regularisation, so expect "
                  "chance-level rankings here: datamodels need M in the hundreds to thousands",
}
# Short unit labels for the table; the full sign and unit strings of each class are in the JSON.
SHORT_UNIT = {
    "random": "noise [0, 1)", "bm25": "BM25 >= 0", "embedding_cosine": "cosine",
    "grad_cosine": "cosine", "grad_dot": "nats / unit lr", "grad_tokenwise": "max per-token cosine", "diag_influence": "nats / unit weight",
    "kfac": "nats / unit weight", "ekfac": "nats / unit weight", "datainf": "nats / unit weight",
    "kronfluence": "nats / unit weight", "hessian_influence": "nats / unit weight",
    "tracin": "nats (lr-weighted, summed over ckpts)", "trak": "log-odds / unit weight",
    "less": "lr-weighted cosine sum", "activation_similarity": "cosine", "activation_gradient": "cosine",
    "delta_h": "cosine", "delta_h_grad": "cosine", "causal_patching": "logits of target margin",
    "llm_judge": "rating 0-10", "datamodels": "nats/token",
}


def build_config(run_dir: str):
    from datablame.config import parse_config
    from datablame.demo import demo_config

    d = demo_config(run_dir).model_dump(mode="json")
    d["name"] = "methods-demo"
    d["training"]["save_steps"] = 170  # 510 steps in all: checkpoints 170, 340, 510
    d["attribution"]["options"] = OPTIONS
    return parse_config(d, source="<benchmarks/methods_demo.py>")


def run_cli(args: list[str], log: Path) -> dict:
    """`datablame <args>` as its own process with 1 torch thread; wall and CPU seconds, output teed to `log`."""
    cmd = [str(Path(sys.executable).parent / "datablame"), *args]
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = loadavg()
    t = time.perf_counter()
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while chunk := proc.stdout.read1(65536):  # raw bytes: progress bars keep their carriage returns
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            f.write(chunk)
        rc = proc.wait()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": "datablame " + " ".join(shlex.quote(a) for a in args), "rc": rc, "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "loadavg_start": load0, "loadavg_end": loadavg(), "log": str(log)}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ground_truth_metrics(cfg, scores: dict[str, np.ndarray], query_ids: list[str]) -> dict[str, dict]:
    from datablame.api import load_corpus
    from datablame.metrics import evaluate, summarize

    corpus, _, truth = load_corpus(cfg)
    idx = corpus.index_of()
    rel = [[idx[r] for r in truth[q] if r in idx] for q in query_ids]
    out = {}
    for name, mat in scores.items():
        s = summarize(evaluate(mat, rel, ks=(1, 5, K)), seed=0)
        out[name] = {
            f"recall@{K}": s[f"recall@{K}"]["mean"], f"recall@{K}_ci": [s[f"recall@{K}"]["ci_low"], s[f"recall@{K}"]["ci_high"]],
            "mAP": s["ap"]["mean"], "mAP_ci": [s["ap"]["ci_low"], s["ap"]["ci_high"]],
            "recall@1": s["recall@1"]["mean"], "recall@5": s["recall@5"]["mean"],
            "mrr": s["mrr"]["mean"], "roc_auc": s["roc_auc"]["mean"], "queries": s["ap"]["n"],
        }
    return out


def fmt(x: float | None, nd: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def render_md(report: dict) -> str:
    cmp = report["comparison"]
    lines = [
        f"# Every method on the demo corpus ({report['corpus']})", "",
        f"One command: `{report['attribute']['command']}` — {report['attribute']['wall_s']:.0f} s wall for "
        f"{len(report['methods'])} methods on {report['torch_threads']} torch thread (2 shared cores, load average "
        f"{report['attribute']['loadavg_start'][0]:.1f} → {report['attribute']['loadavg_end'][0]:.1f}); "
        f"recall@{K} and mAP against the planted rows, mean over {report['queries']} queries "
        "(95% bootstrap CI in methods_demo.json). Seconds: fit+score in that process, in this order "
        "(shared features paid by the first method that needs them).", "",
        *([f"Before it, `{report['lds_sweep']['command']}` trained the subset models `datamodels` fits on: "
           f"{report['lds_sweep']['wall_s']:.0f} s wall.", ""] if report.get("lds_sweep") else []),
        f"| method | unit (sign: higher = more responsible unless noted) | recall@{K} | mAP | seconds |",
        "|---|---|---|---|---|",
    ]
    for m in report["methods"]:
        unit = m["unit_short"] + ("" if m["sign"].startswith("higher") else " (no sign: noise)")
        lines.append(f"| {m['name']} | {unit} | {fmt(m[f'recall@{K}'])} | {fmt(m['mAP'])} | {fmt(m['seconds'], 1)} |")
    for name in report["excluded"]:
        lines.append(f"| {name} | {SHORT_UNIT.get(name, '')} | not run | not run | — |")
    lines += ["", *(f"- {n}: {why}" for n, why in report["excluded"].items())]
    lines += [*(f"- {n}: {t}" for n, t in report["notes"].items())]
    lines += ["", f"## Agreement between methods (top-{cmp['k']} overlap, Jaccard, Spearman; mean over queries)", "",
              "![comparison](methods_demo_comparison.png)", ""]
    lines += report["agreement_summary"]
    lines += ["", "Every pair: methods_demo_comparison.md / .json."]
    return "\n".join(lines) + "\n"


def agreement_summary(cmp: dict) -> list[str]:
    """A few lines: the closest and the most different pairs, each method's nearest neighbour."""
    pairs = [p for p in cmp["pairs"] if "random" not in (p["a"], p["b"])]
    by_j = sorted(pairs, key=lambda p: -p["jaccard"])
    by_rho = sorted((p for p in pairs if p["spearman"] == p["spearman"]), key=lambda p: -p["spearman"])
    out = ["Most similar top-10 lists (Jaccard):",
           *(f"- {p['a']} ~ {p['b']}: Jaccard {p['jaccard']:.2f}, overlap {p['overlap']:.1f}/10, "
             f"Spearman {p['spearman']:.2f}" for p in by_j[:8]),
           "", "Most similar full rankings (Spearman over all rows):",
           *(f"- {p['a']} ~ {p['b']}: {p['spearman']:.2f}" for p in by_rho[:5]),
           "", "Least similar full rankings (Spearman):",
           *(f"- {p['a']} ~ {p['b']}: {p['spearman']:.2f}" for p in by_rho[-5:]),
           "", "Nearest neighbour of each method (highest top-10 Jaccard):"]
    names = [n for n in cmp["methods"] if n != "random"]
    for n in names:
        mine = [p for p in pairs if n in (p["a"], p["b"])]
        if mine:
            best = max(mine, key=lambda p: p["jaccard"])
            other = best["b"] if best["a"] == n else best["a"]
            out.append(f"- {n}: {other} (Jaccard {best['jaccard']:.2f})")
    rnd = [p for p in cmp["pairs"] if "random" in (p["a"], p["b"])]
    if rnd:
        out += ["", f"Against random, every method's top-10 Jaccard is at most {max(p['jaccard'] for p in rnd):.2f} "
                    f"and |Spearman| at most {max(abs(p['spearman']) for p in rnd if p['spearman'] == p['spearman']):.2f} "
                    "(the chance level of agreement)."]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/methods-demo")
    ap.add_argument("--only", default=None, help="comma-separated subset of METHODS (a quick check)")
    ap.add_argument("--reuse", action="store_true", help="do not attribute again: report the last attribution")
    ap.add_argument("--lds-subsets", type=int, default=8,
                    help="subset models the datamodels method fits on (more: better datamodels, ~40 s each)")
    ap.add_argument("--num-cpus", type=int, default=2, help="Ray CPUs for the LDS sweep")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    methods = [m for m in METHODS if not args.only or m in args.only.split(",")]
    from datablame.methods import REGISTRY

    missing = sorted(set(REGISTRY) - set(METHODS) - set(EXCLUDED))
    if missing:
        raise SystemExit(f"registered but neither run nor excluded here: {missing} (add them to METHODS)")
    run_dir = REPO / args.run
    cfg = build_config(args.run)
    yaml_path = Path(f"{run_dir}.yaml")
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    yaml_path.write_text(cfg.to_yaml(), encoding="utf-8")
    rel_yaml = str(yaml_path.relative_to(REPO))
    from datablame.runs import prepare_run_dir

    prepare_run_dir(cfg)  # the run's marker first: the CLI refuses a non-empty directory without one
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    layout = RunLayout(run_dir)
    train_summary = layout.train_summary
    train = {"reused": layout.final_model.is_dir()}
    if not train["reused"]:
        train.update(run_cli(["train", "--config", rel_yaml], logs / "train.log"))
        if train["rc"] != 0:
            raise SystemExit(f"datablame train failed (exit {train['rc']}); see {logs / 'train.log'}")
    train["train_s"] = json.loads(train_summary.read_text())["seconds"] if train_summary.is_file() else None

    lds = None
    if "datamodels" in methods and not args.reuse:
        # trains only the subsets not yet in <run>/lds/jobs (the sweep is cached and resumes)
        lds = run_cli(["lds", "--config", rel_yaml, "--methods", "grad_cosine", "--subsets", str(args.lds_subsets),
                       "--num-cpus", str(args.num_cpus)], logs / "lds.log")
        if lds["rc"] != 0:
            raise SystemExit(f"datablame lds failed (exit {lds['rc']}); see {logs / 'lds.log'}")

    att = layout.attribution
    att_dir = att.root
    if args.reuse:
        prev = json.loads((RESULTS / "methods_demo.json").read_text()) if (RESULTS / "methods_demo.json").is_file() else {}
        attribute = prev.get("attribute", {"command": "(reused)", "wall_s": float("nan"),
                                           "loadavg_start": [0.0], "loadavg_end": [0.0]})
        lds = prev.get("lds_sweep")
    else:
        # cold caches, so every method's seconds include all it computes: the attribution dir holds
        # on-disk checkpoint features, curvature / kronfluence factors and the judge's SQLite cache,
        # <run>/index the BM25 / MiniLM text indices
        for cache in (att_dir, layout.index_dir):
            if cache.is_dir():
                shutil.rmtree(cache)
        attribute = run_cli(["attribute", "--config", rel_yaml, "--method", ",".join(methods)], logs / "attribute.log")
        if attribute["rc"] != 0:
            raise SystemExit(f"datablame attribute failed (exit {attribute['rc']}); see {logs / 'attribute.log'}")

    result = json.loads(att.results_json.read_text())
    with np.load(att.scores_npz) as z:
        scores = {n: z[n] for n in z.files}
    query_ids = [q["query_id"] for q in result["queries"]]
    metrics = ground_truth_metrics(cfg, scores, query_ids)
    described = {d["name"]: d for d in result["methods"]}
    rows = []
    for name in scores:
        cls = REGISTRY[name]
        rows.append({
            "name": name, "sign": cls.sign, "unit": cls.unit, "unit_short": SHORT_UNIT.get(name, cls.unit[:30]),
            "cost": cls.cost, "options": OPTIONS.get(name, {}), **metrics[name],
            "seconds": result["timing"].get(f"{name}_s"), "described": described.get(name, {}),
        })
    names = list(scores)
    if len(names) > 1:
        for ext in ("json", "md", "png") if not args.only else ():
            shutil.copy(att_dir / f"comparison.{ext}", RESULTS / f"methods_demo_comparison.{ext}")
        cmp = json.loads(att.comparison_json.read_text())
    else:
        cmp = {"k": K, "methods": names, "pairs": []}
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "corpus": "planted facts (demo config): 544 rows, 8 planted-fact queries",
        "model": "demo tiny Llama: 4 layers, hidden 128, trained from scratch 15 epochs; checkpoints 170/340/510; "
                 "cross-checkpoint methods: old = random init (model/base), new = final",
        "run_dir": args.run, "config": rel_yaml, "torch_threads": 1, "queries": len(query_ids),
        "train": train, "lds_sweep": lds, "attribute": attribute, "prepare_s": result["timing"].get("prepare_s"),
        "methods": rows, "excluded": {k: v for k, v in EXCLUDED.items()},
        "not_requested": [m for m in METHODS if m not in methods],
        "notes": {k: v for k, v in NOTES.items() if k in scores},
        "comparison": cmp, "agreement_summary": agreement_summary(cmp) if cmp["pairs"] else [],
        "script_wall_s": None,
    }
    report["script_wall_s"] = round(time.perf_counter() - t_start, 1)
    if args.only:  # a quick check: the published files always hold every method
        print(render_md(report))
        print(f"--only: nothing written to {RESULTS}; attribution in {att_dir}")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json, out_md = RESULTS / "methods_demo.json", RESULTS / "methods_demo.md"
    tmp = out_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out_json)
    out_md.write_text(render_md(report), encoding="utf-8")
    print(render_md(report))
    print(f"wrote {out_json}\nwrote {out_md}")
    if len(names) > 1:
        print(f"wrote {RESULTS / 'methods_demo_comparison.png'} (+ .json, .md)")
    print(f"run directory: {run_dir} (attribution: {att_dir}); total {report['script_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
