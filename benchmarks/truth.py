"""The truth table of issue 16: per planted variant, per method (fusion and the cascade
included), recall@10 and mAP against the planted ground truth and LDS against retrained
subset models, each with a 95% CI, and seconds; plus whether the issue's goals hold.

Per variant (easy, paraphrase, lexical_decoys, unlearned; in that order):
1. train the tiny model once (the bench preset's planted run, resized: `SIZES`, `TINY`);
2. `datablame bench planted` on it (`api.bench`: every method of `--methods all`, which
   includes `fused`, bm25 and random, plus the kronfluence peer), each timed with no shared
   features; metrics on the queries the model answers right (logit evaluation);
3. the retrieval cascade (`attribute_with_cascade`, stages embedding -> BM25 -> gradient
   re-rank sized in proportion to the defaults at the full preset's 5,024 rows) twice: with the
   gradient re-rank as last stage (the old cascade) and with `fused` (reciprocal-rank fusion
   of the stages) as last stage; rows outside a query's candidates have no rank;
4. one LDS sweep (M subset models on alpha-subsets, cached under <run>/lds/jobs by the LDS
   machinery) scored against every method's bench scores (no method is re-run for LDS;
   a cascade's unranked rows count 0 in the subset sums);
5. `fused_learned`: `fused` with `combine: learned` on the same components' bench scores,
   its weights fitted per query on that sweep leaving the query out (no retraining). Its LDS
   is measured on the same subset models its weights were fitted on (other queries' losses).

All metrics, LDS included, are over the *learned* queries (logit evaluation). In the
`unlearned` variant half the facts have no plants (`learned_by_design: false`); those
queries are listed, and the metrics are on learned queries only.

Goals per variant: fused recall@10 >= max(bm25, best gradient/influence method);
fused LDS >= best single method's LDS - 0.02; ekfac LDS - kronfluence LDS, paired bootstrap
over queries (goal: CI not entirely below 0).

    .venv/bin/python benchmarks/truth.py                  # -> benchmarks/results/truth.json
    .venv/bin/python benchmarks/truth.py --variants easy --force
    .venv/bin/python benchmarks/truth.py --variants paraphrase --add-fused-learned   # saved scores + cached sweep

Resumable: a variant already in truth.json is skipped unless --force; the bench reuses
finished methods (`resume`) and the LDS sweep its cached subset models. The 2 cores are
shared with other jobs (load average and cores recorded): wall times are upper bounds.
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
from datablame.config import RetrievalConfig, parse_config  # noqa: E402
from datablame.utils.io import atomic_write_json  # noqa: E402
from datablame.verify.lds import lds_scores  # noqa: E402
from datablame.verify.stats import bootstrap_mean  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "truth.json"
VARIANTS = ("easy", "paraphrase", "lexical_decoys", "unlearned")
# The small preset (61 rows, 4 queries) has too few queries for a CI. `medium` (the default):
# ~400 rows, 33 queries; `influence`: the size of benchmarks/influence_lds.py (~200 rows, 17 queries).
SIZES = {
    "medium": ({"n_entities": 40, "n_facts": 32, "plants_per_fact": 3, "decoys_per_fact": 3,
                "background_per_entity": 5, "poison_facts": 1, "poison_rows": 2, "poison_true_rows": 3}, 16),
    "influence": ({"n_entities": 20, "n_facts": 16, "plants_per_fact": 3, "decoys_per_fact": 3,
                   "background_per_entity": 5, "poison_facts": 1, "poison_rows": 2, "poison_true_rows": 3}, 12),
}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 1024}
# cascade stages in proportion to the defaults (2000 / 500 candidates) at the full preset's 5,024 rows
CASCADE = {"embedding_k": 80, "bm25_k": 20}
CASCADES = {"cascade (grad_cosine re-rank)": "grad_cosine", "cascade + fused": "fused"}
GRADIENT_FAMILIES = ("gradient", "influence")
LEARNED = "fused_learned"  # fused with combine: learned (weights fitted on the LDS sweep, leave-one-query-out)
NOT_SINGLE = ("fused", LEARNED, "random", *CASCADES)  # not a single kind of evidence (or a baseline)
KRON = "kronfluence (peer)"


def build_config(root: Path, variant: str, size: str = "medium"):
    planted, epochs = SIZES[size]
    base = api.bench_config("planted", root / f"{size}-{variant}", size="small", variant=variant, epochs=epochs)
    raw = base.model_dump(mode="json", exclude_none=True)
    raw["data"]["planted"] = {**raw["data"]["planted"], **planted}
    raw["model"]["tiny"] = {**raw["model"]["tiny"], **TINY}
    return parse_config(raw, source="<benchmarks/truth.py>")


def cascades(cfg) -> tuple[dict[str, np.ndarray], dict[str, float], dict]:
    """Score matrices (-inf outside a query's candidates) of the two cascades, their seconds,
    and the stage table (recall of the exhaustive grad_cosine top-10 per stage)."""
    from datablame.methods import get_method
    from datablame.retrieval.candidates import attribute_with_cascade

    inputs = api.prepare_inputs(cfg)[0]
    inputs.attribution = inputs.attribution.model_copy(
        update={"retrieval": RetrievalConfig(enabled=True, **CASCADE)})
    t0 = time.perf_counter()
    done = attribute_with_cascade(inputs, [get_method("grad_cosine"), get_method("fused")], evaluate=True,
                                  progress=False)
    wall = time.perf_counter() - t0
    tm = done.timing
    scores = {label: done.scores[m] for label, m in CASCADES.items()}
    secs = {label: tm.get("embedder_load_s", 0.0) + tm["cascade_s"] + tm.get(f"{m}_s", 0.0)
            for label, m in CASCADES.items()}
    return scores, secs, {"stages": done.cascade.stage_summary(), "config": done.cascade.config,
                          "wall_s_incl_reference": wall, "recall_of": done.report.get("recall_of")}


def _iv(vals: np.ndarray | list[float], n_boot: int = 2000) -> dict[str, Any]:
    iv = bootstrap_mean(np.asarray(vals, dtype=float), n_boot=n_boot, seed=0)
    return {"mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "n": iv.n}


def _metric(summary: dict, key: str) -> dict[str, Any]:
    m = summary.get(key) or {}
    return {"mean": m.get("mean"), "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"), "n": m.get("n")}


def run_variant(variant: str, args) -> dict[str, Any]:
    from datablame.bench.runner import _clean
    from datablame.layout import RunLayout
    from datablame.methods import REGISTRY
    from datablame.metrics import evaluate, summarize

    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    cfg = build_config(Path(args.run_root), variant, args.size)
    planted, epochs = SIZES[args.size]
    methods = None if args.methods == "all" else args.methods.split(",")
    print(f"[{variant}] bench ({args.methods}, peers {args.peers})", flush=True)
    bench = api.bench(cfg, "planted", methods=methods, peers=args.peers.split(",") if args.peers else [],
                      threads=1, resume=True, command=command_line())
    learned_ids = bench["queries"]["learned"]
    with np.load(RunLayout(cfg.output.dir).bench.scores_npz) as z:
        scores = {k.replace("_(peer)", " (peer)"): np.asarray(z[k], dtype=float) for k in z.files}
    inputs, truth = api.prepare_inputs(cfg)
    qids = [q.query_id for q in inputs.queries]
    learned = [qids.index(q) for q in learned_ids]
    idx = inputs.corpus.index_of()
    truth_idx = [[idx[r] for r in truth.get(q, []) if r in idx] for q in qids]

    rows: dict[str, dict[str, Any]] = {}
    for name, e in bench["methods"].items():
        if e.get("error"):
            rows[name] = {"error": e["error"][:300]}
            continue
        fam = "peer" if e["kind"] == "peer" else getattr(REGISTRY.get(name), "family", None)
        lm = e["metrics"]["learned"]
        am = e["metrics"]["all"]
        rows[name] = {"family": fam, "recall@10": _metric(lm, "recall@10"), "map": _metric(lm, "ap"),
                      "seconds": e.get("seconds"), "reused": bool(e.get("reused")),
                      "all_queries": {"recall@10": _metric(am, "recall@10"), "map": _metric(am, "ap")}}
    print(f"[{variant}] cascades", flush=True)
    try:
        c_scores, c_secs, c_info = cascades(cfg)
        for label, s in c_scores.items():
            pq = evaluate(s, truth_idx)
            lm = summarize([pq[i] for i in learned], n_boot=2000, seed=0)
            am = summarize(pq, n_boot=2000, seed=0)
            rows[label] = {"family": "cascade", "recall@10": _metric(lm, "recall@10"), "map": _metric(lm, "ap"),
                           "seconds": c_secs[label], "reused": False,
                           "all_queries": {"recall@10": _metric(am, "recall@10"), "map": _metric(am, "ap")}}
            scores[label] = s
    except Exception as err:  # noqa: BLE001 - reported, the rest of the table stands
        c_info = {"error": f"{type(err).__name__}: {err}"}
    print(f"[{variant}] LDS sweep (M={args.subsets})", flush=True)
    masks, losses, lds_info = lds_sweep(cfg, args.subsets, args.alpha, args.num_cpus, progress=False)
    per_q: dict[str, np.ndarray] = {}
    per_q_all: dict[str, np.ndarray] = {}
    for name, s in scores.items():
        if name not in rows or "error" in rows[name]:
            continue
        s = np.where(np.isfinite(s), s, 0.0)  # a cascade's unranked rows add nothing to a subset's sum
        every = lds_scores(s, masks, losses)
        v = every[learned]
        per_q[name], per_q_all[name] = v, every
        rows[name]["lds"] = _iv(v)
        rows[name]["all_queries"]["lds"] = _iv(every)
        rows[name]["lds_undefined_queries"] = int(np.sum(~np.isfinite(v)))
    weights = None
    if all(c in scores and "error" not in rows.get(c, {"error": 1}) for c in _fused_components()):
        rows[LEARNED], per_q[LEARNED], per_q_all[LEARNED], weights = fused_learned(
            scores, masks, losses, qids, truth_idx, learned)
    out = {
        "size": {"name": args.size, "preset": "bench small preset, corpus and model resized",
                 "planted": {**planted, "variant": variant}, "model": TINY, "epochs": epochs, "rows": len(inputs.corpus), "queries": len(qids),
                 "learned_queries": len(learned)},
        "queries": {"learned": learned_ids, "not_learned": bench["queries"]["not_learned"],
                    "learned_by_design_false": bench["queries"].get("unlearned_by_design", []),
                    "learned_by_design_false_but_answered": bench["queries"].get("unlearned_but_answered", []),
                    "metrics_on": "learned queries only (logit evaluation); each method's `all_queries` "
                                  "holds the same metrics over every query, learned or not"},
        "methods": rows,
        "skipped_methods": bench.get("skipped_methods", {}),
        "cascade": c_info,
        "lds": {**lds_info, "scored": "every method's bench scores (no method re-run); learned queries"},
        "per_query_lds": {n: dict(zip([qids[i] for i in learned], map(float, v), strict=True))
                          for n, v in per_q.items()},
        "per_query_lds_all": {n: dict(zip(qids, map(float, v), strict=True)) for n, v in per_q_all.items()},
        "fused_learned_weights": weights,
        "goals": goals(rows, per_q),
        "goals_all_queries": goals({n: {**r, **r.get("all_queries", {})} for n, r in rows.items()}, per_q_all),
        "machine": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "loadavg_start": load_start,
                    "loadavg_end": list(os.getloadavg()),
                    "note": "2 cores shared with other jobs: wall times are upper bounds"},
        "wall_s": time.perf_counter() - t_start, "date": now(),
    }
    return _clean(out)


def _mean(r: dict, key: str) -> float:
    v = (r.get(key) or {}).get("mean")
    return float("nan") if v is None else float(v)


def goals(rows: dict[str, dict], per_q: dict[str, np.ndarray]) -> dict[str, Any]:
    ok = {n: r for n, r in rows.items() if "error" not in r}
    grad = {n: r for n, r in ok.items() if r.get("family") in GRADIENT_FAMILIES or n == KRON}
    out: dict[str, Any] = {}
    for fusion in ("fused", LEARNED, "cascade + fused"):
        if fusion not in ok:
            continue
        best_g = max(grad, key=lambda n: _mean(grad[n], "recall@10"), default=None)
        target = max(_mean(ok.get("bm25", {}), "recall@10"), _mean(grad[best_g], "recall@10") if best_g else -1)
        singles = {n: r for n, r in ok.items() if n not in NOT_SINGLE and np.isfinite(_mean(r, "lds"))}
        best_l = max(singles, key=lambda n: _mean(singles[n], "lds"), default=None)
        f_rec, f_lds = _mean(ok[fusion], "recall@10"), _mean(ok[fusion], "lds")
        out[fusion] = {
            "recall": {"fusion": f_rec, "bm25": _mean(ok.get("bm25", {}), "recall@10"), "best_gradient": best_g,
                       "best_gradient_recall": _mean(grad[best_g], "recall@10") if best_g else None,
                       "holds": bool(f_rec >= target - 1e-12)},
            "lds": {"fusion": f_lds, "best_single": best_l,
                    "best_single_lds": _mean(singles[best_l], "lds") if best_l else None,
                    "gap": f_lds - _mean(singles[best_l], "lds") if best_l else None,
                    "holds": bool(best_l and f_lds >= _mean(singles[best_l], "lds") - 0.02)},
        }
    if "ekfac" in per_q and KRON in per_q:
        d = per_q["ekfac"] - per_q[KRON]
        iv = _iv(d, n_boot=5000)
        out["ekfac_vs_kronfluence"] = {**iv, "ekfac_lds": _mean(ok["ekfac"], "lds"), "kronfluence_lds": _mean(ok[KRON], "lds"),
                                       "wins": int(np.sum(d > 0)), "losses": int(np.sum(d < 0)),
                                       "holds": None if iv["ci_high"] is None or not np.isfinite(iv["ci_high"])
                                       else bool(iv["ci_high"] >= 0),
                                       "definition": "per-query LDS(ekfac) - LDS(kronfluence peer), 95% paired "
                                                     "bootstrap CI over learned queries (5000); holds: CI not "
                                                     "entirely below 0 (null: fewer than 2 queries, no CI)"}
    return out


def _fused_components() -> list[str]:
    from datablame.methods import get_method

    return list(get_method("fused").options.methods)


def fused_learned(scores: dict[str, np.ndarray], masks: np.ndarray, losses: np.ndarray, qids: list[str],
                  truth_idx: list[list[int]], learned: list[int]) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """`fused` with combine: learned on the saved component scores and the sweep's masks/losses:
    its table row, per-query LDS (learned queries, all queries) and fitted weights per query."""
    from datablame.methods import get_method
    from datablame.metrics import evaluate, summarize

    method = get_method("fused", {"combine": "learned"})
    t0 = time.perf_counter()
    s = method.learn({c: scores[c] for c in method.options.methods}, masks, losses, qids)
    secs = time.perf_counter() - t0
    pq = evaluate(s, truth_idx)
    lm, am = summarize([pq[i] for i in learned], n_boot=2000, seed=0), summarize(pq, n_boot=2000, seed=0)
    every = lds_scores(s, masks, losses)
    row = {"family": "fusion", "recall@10": _metric(lm, "recall@10"), "map": _metric(lm, "ap"), "lds": _iv(every[learned]),
           "seconds": secs, "seconds_note": "the weight fit only; plus its components' seconds", "reused": True,
           "lds_undefined_queries": int(np.sum(~np.isfinite(every[learned]))),
           "all_queries": {"recall@10": _metric(am, "recall@10"), "map": _metric(am, "ap"), "lds": _iv(every)},
           "note": "weights per query fitted on the other queries' LDS targets (leave-one-query-out), "
                   "on the same subset models the LDS is measured with"}
    return row, every[learned], every, method.fitted


def add_fused_learned(variant: str, args, data: dict) -> None:
    """Add `fused_learned` to a variant already in truth.json from its saved bench scores and
    cached LDS sweep (nothing is trained or re-scored)."""
    from datablame.bench.runner import _clean
    from datablame.features.fusion_learned import load_lds_subsets
    from datablame.layout import RunLayout

    v = data["variants"][variant]
    cfg = build_config(Path(args.run_root), variant, args.size)
    with np.load(RunLayout(cfg.output.dir).bench.scores_npz) as z:
        scores = {k: np.asarray(z[k], dtype=float) for k in z.files if k in (*_fused_components(), "fused")}
    inputs, truth = api.prepare_inputs(cfg)
    qids = [q.query_id for q in inputs.queries]
    learned = [qids.index(q) for q in v["queries"]["learned"]]
    idx = inputs.corpus.index_of()
    truth_idx = [[idx[r] for r in truth.get(q, []) if r in idx] for q in qids]
    # the cached sweep's records, read as `fused` reads them (nothing is trained)
    masks, losses = load_lds_subsets(RunLayout(cfg.output.dir).root, inputs.corpus.fingerprint(), len(inputs.corpus),
                                     qids)
    check = float(np.nanmean(lds_scores(scores["fused"], masks, losses)[learned]))
    info = {"subset_models": len(masks), "source": "cached <run>/lds/jobs records",
            "fused_rrf_lds_recomputed": check, "fused_rrf_lds_in_table": v["methods"]["fused"]["lds"]["mean"]}
    row, pq, pq_all, weights = fused_learned(scores, masks, losses, qids, truth_idx, learned)
    v["methods"][LEARNED] = row
    v["per_query_lds"][LEARNED] = dict(zip([qids[i] for i in learned], map(float, pq), strict=True))
    v["per_query_lds_all"][LEARNED] = dict(zip(qids, map(float, pq_all), strict=True))
    v["fused_learned_weights"] = weights
    per_q = {n: np.array(list(d.values()), dtype=float) for n, d in v["per_query_lds"].items()}
    per_q_all = {n: np.array(list(d.values()), dtype=float) for n, d in v["per_query_lds_all"].items()}
    v["goals"] = goals(v["methods"], per_q)
    v["goals_all_queries"] = goals({n: {**r, **r.get("all_queries", {})} for n, r in v["methods"].items()}, per_q_all)
    v["fused_learned_added"] = {"date": now(), "command": command_line(), "lds_sweep": info,
                                "loadavg": list(os.getloadavg()), "cores": os.cpu_count()}
    data["variants"][variant] = _clean(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--force", action="store_true", help="recompute variants already in truth.json")
    ap.add_argument("--run-root", default="runs/truth")
    ap.add_argument("--size", choices=sorted(SIZES), default="medium")
    ap.add_argument("--out", type=Path, default=OUT, help="results JSON (default benchmarks/results/truth.json)")
    ap.add_argument("--methods", default="all", help="bench methods ('all': the bench default set)")
    ap.add_argument("--peers", default="kronfluence", help="bench peers (comma-separated; '' for none)")
    ap.add_argument("--subsets", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--add-fused-learned", action="store_true",
                    help="only add fused_learned to variants already in truth.json (saved scores, cached sweep)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = args.out
    data = json.loads(out.read_text()) if out.is_file() else {}
    if data.get("settings", {}).get("size", args.size) != args.size:
        raise SystemExit(f"{out} holds size {data['settings']['size']!r}; pass --out for size {args.size!r}")
    data.setdefault("variants", {})
    if args.add_fused_learned:
        for variant in [v for v in VARIANTS if v in args.variants.split(",") and v in data["variants"]]:
            add_fused_learned(variant, args, data)
            atomic_write_json(out, data)
            m = data["variants"][variant]["methods"]
            print(f"[{variant}] LDS fused_learned {m[LEARNED]['lds']['mean']:.3f} vs fused {m['fused']['lds']['mean']:.3f}; "
                  f"goals {json.dumps(data['variants'][variant]['goals'].get(LEARNED))}", flush=True)
        return
    for variant in [v for v in VARIANTS if v in args.variants.split(",")]:
        if variant in data["variants"] and not args.force:
            print(f"[{variant}] already in {out.name}; skipped (--force to redo)")
            continue
        data["variants"][variant] = run_variant(variant, args)
        data.update({
            "what": "issue 16 truth table: per planted variant and method, recall@10 / mAP (planted ground truth) "
                    "and LDS (retrained subset models), 95% bootstrap CIs over learned queries, seconds",
            "version": __version__, "date": now(), "command": command_line(),
            "settings": {"size": args.size, "methods": args.methods, "peers": args.peers, "lds_subsets": args.subsets,
                         "lds_alpha": args.alpha, "cascade": CASCADE, "order": list(VARIANTS)},
        })
        atomic_write_json(out, data)
        g = data["variants"][variant]["goals"]
        print(f"[{variant}] -> {out}; goals: " + json.dumps({k: v.get("holds") if "holds" in v else
                                                              {kk: vv["holds"] for kk, vv in v.items()}
                                                              for k, v in g.items()}), flush=True)


if __name__ == "__main__":
    main()
