"""`datablame bench hops|planted`: every method, ours and the peers', on one trained model,
scored against ground truth, with time and peak memory side by side.

    cfg = bench_config("hops", "runs/bench-hops")
    bench = run_bench(cfg, "hops", BenchOptions(methods=["grad_cosine", "bm25"], peers=["bergson"]))

Steps: build the synthetic corpus (its queries and ground truth come with it), train the
tiny model or reuse the run directory's, encode rows and queries once
(`inputs.prepare_inputs`), run the logit evaluation (which queries the model actually
answers right), then each method (`get_method(name).fit` + `score`) and each peer
adapter, one after another in this process, each timed and memory-sampled by
`bench.measure` with no shared features (a method pays for its own gradients; nothing is
shared between methods), and the model's mode and `requires_grad` flags restored after
it. Metrics per query on the learned queries (and, separately, on the ones the model gets
wrong), averaged with percentile-bootstrap CIs over queries. A failing method or peer
becomes an entry with `error` set; it never sinks the benchmark.

Writes `<run>/bench/`: bench.json (the source of truth), bench.md, readme_section.md,
pr.png, recall_at_k.png, scores.npz -- and, with `results_dir`, copies named
`bench_<corpus>.json|.md|_pr.png|_recall_at_k.png` (the .md is the README section).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datablame import __version__
from datablame.bench.logit_eval import logit_evaluation
from datablame.bench.measure import measure
from datablame.bench.peers import load_adapters, restore_model_state, run_peer, save_model_state
from datablame.config import HopsConfig, PlantedConfig, RunConfig, parse_config
from datablame.data.synthetic.planted_variants import VARIANTS
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext, SharedFeatures
from datablame.layout import BenchLayout, RunLayout
from datablame.methods import REGISTRY, get_method, run_method
from datablame.metrics import (
    evaluate,
    precision_recall_curve,
    query_metrics,
    summarize,
    topk_jaccard,
)
from datablame.utils.io import atomic_save_npz, atomic_write_json, atomic_write_text

log = logging.getLogger("datablame")

CORPORA = ("hops", "planted")
SIZES = ("full", "small")
# `--methods all` leaves these out (name them explicitly to run them)
SKIP_BY_DEFAULT = {
    "datamodels": "fits on the subset models of `datablame lds` (a retraining sweep, not an attribution)",
    "llm_judge": "asks an instruct LLM about every (query, row) pair: hours on CPU at this size",
    "hessian_influence": "exact Hessian of the ~10^5 MLP weights: conjugate gradient over the corpus per "
                         "query ran > 15 min on 2 cores without finishing; it is the small-model reference "
                         "(use --option hessian_influence.pattern=... on one small layer)",
}
RECALL_CURVE_K = 100
PR_GRID = np.linspace(0.0, 1.0, 21)

_HOPS = {
    "full": {"n_bases": 10, "depth": 2, "docs_per_kind": 6, "query_inputs": 2, "max_value": 30,
             "filler_rows": 600},
    "small": {"n_bases": 3, "depth": 1, "docs_per_kind": 2, "query_inputs": 1, "max_value": 12},
}
_PLANTED = {
    "full": {"n_entities": 360, "n_facts": 64, "plants_per_fact": 4, "decoys_per_fact": 4,
             "background_per_entity": 12, "poison_facts": 16, "poison_rows": 3, "poison_true_rows": 9},
    "small": {"n_entities": 10, "n_facts": 3, "plants_per_fact": 3, "decoys_per_fact": 2,
              "background_per_entity": 4, "poison_facts": 1, "poison_rows": 2, "poison_true_rows": 4},
}
_MODEL = {
    ("hops", "full"): {"hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 2, "vocab_size": 768},
    ("planted", "full"): {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 3, "vocab_size": 1024},
    ("hops", "small"): {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 320},
    ("planted", "small"): {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 400},
}
# Per-method/peer options of the presets (cfg.attribution.options; --option overrides).
# traker on CPU projects the full gradient with a dense Gaussian matrix (BasicProjector):
# over 4 checkpoints at proj_dim 1024 it took 905 s of the hops run, so both TRAKs use the
# final model alone (same ensemble for the agreement check) and traker proj_dim 512.
_OPTIONS = {
    "full": {"trak": {"checkpoints": "last"}, "traker": {"checkpoints": "last", "proj_dim": 512}},
    "small": {"trak": {"checkpoints": "last"}, "traker": {"checkpoints": "last", "proj_dim": 256}},
}
_EPOCHS = {("hops", "full"): 20, ("planted", "full"): 14, ("hops", "small"): 30, ("planted", "small"): 20}


def bench_config(corpus: str, out_dir: str | Path, *, size: str = "full", seed: int = 0,
                 epochs: float | None = None, overwrite: bool = False, variant: str = "easy") -> RunConfig:
    """The benchmark run: corpus preset, tiny Llama trained from scratch, shared settings.
    `variant`: the planted corpus' `data.planted.variant` (easy, paraphrase, lexical_decoys,
    unlearned; see datablame.data.synthetic.planted_variants)."""
    if corpus not in CORPORA:
        raise DatablameError(f"unknown benchmark corpus {corpus!r}", f"choose one of {list(CORPORA)}")
    if size not in SIZES:
        raise DatablameError(f"unknown benchmark size {size!r}", f"choose one of {list(SIZES)}")
    if variant not in VARIANTS or (corpus != "planted" and variant != "easy"):
        raise DatablameError(f"unknown {corpus} benchmark variant {variant!r}",
                             f"choose one of {list(VARIANTS)} with the planted corpus" if variant not in VARIANTS
                             else "variants belong to the planted corpus: drop --variant, or run `bench planted`")
    data: dict[str, Any]
    tiny = {**_MODEL[(corpus, size)], "num_attention_heads": 4, "num_key_value_heads": 4}
    if corpus == "hops":
        hops = {**_HOPS[size], "seed": seed}
        from datablame.data.synthetic.hops import hops_tokens

        data = {"source": "hops", "template": "plain", "hops": hops}
        tiny["extra_tokens"] = hops_tokens(HopsConfig(**hops))
    else:
        data = {"source": "planted", "planted": {**_PLANTED[size], "seed": seed, "variant": variant}}
    n_epochs = epochs if epochs is not None else _EPOCHS[(corpus, size)]
    return parse_config({
        "name": f"bench-{corpus}-{size}", "seed": seed, "data": data,
        "model": {"kind": "tiny", "max_length": 160 if corpus == "hops" else 128, "tiny": tiny},
        "training": {  # from scratch: a large learning rate, as the demo
            "num_train_epochs": n_epochs, "per_device_train_batch_size": 16, "learning_rate": 3e-3,
            "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "weight_decay": 0.01,
            "save_steps": _save_steps(corpus, size, n_epochs, variant), "logging_steps": 200, "seed": seed,
        },
        "attribution": {"top_k": 10, "batch_size": 16, "options": _OPTIONS[size]},
        "output": {"dir": str(out_dir), "overwrite": overwrite},
    }, source=f"<bench {corpus} {size}>")


def _save_steps(corpus: str, size: str, epochs: float, variant: str = "easy") -> int:
    """About four checkpoints over training (TracIn, TRAK ensembles, cross-checkpoint methods)."""
    steps = math.ceil(len(_corpus_rows(corpus, size, variant)) / 16) * epochs
    return max(1, int(steps // 4))


def _corpus_rows(corpus: str, size: str, variant: str = "easy") -> list:
    if corpus == "hops":
        from datablame.data.synthetic.hops import make_hops

        return make_hops(HopsConfig(**_HOPS[size])).corpus.rows
    from datablame.data.synthetic.planted import make_planted

    return make_planted(PlantedConfig(**_PLANTED[size], variant=variant)).corpus.rows


@dataclass
class BenchOptions:
    methods: list[str] | None = None  # None: every registered method but SKIP_BY_DEFAULT
    peers: list[str] | None = None  # None: every peer adapter
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # method/peer -> kwargs
    n_boot: int = 2000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    results_dir: Path | None = None  # also copy <results_name>.* here
    results_name: str | None = None  # file stem of those copies (default bench_<corpus>)
    command: str | None = None  # how the run was started (recorded)
    threads: int | None = None  # torch threads (recorded; set by the caller)
    started: float | None = None  # time.perf_counter() when the command started (wall time)
    resume: bool = False  # reuse methods finished by an earlier run on the same model/data/options


def resolve_methods(requested: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """Method names to run, and the ones left out of `all` with the reason."""
    if requested is None or requested == ["all"]:
        # a method that drives a peer library (kronfluence) runs as that peer, not as ours
        as_peer = {n: "a peer library's backend: it runs in the peers' rows" for n in load_adapters() if n in REGISTRY}
        skip = {**{n: r for n, r in SKIP_BY_DEFAULT.items() if n in REGISTRY}, **as_peer}
        return sorted(n for n in REGISTRY if n not in skip), skip
    unknown = [n for n in requested if n not in REGISTRY]
    if unknown:
        raise DatablameError(f"unknown method(s) {unknown}", f"choose from {sorted(REGISTRY)} (or 'all')")
    return list(dict.fromkeys(requested)), {}


def resolve_peers(requested: list[str] | None) -> list[str]:
    adapters = load_adapters()
    if requested is None or requested == ["all"]:
        return sorted(adapters)
    if requested in ([], ["none"]):
        return []
    unknown = [n for n in requested if n not in adapters]
    if unknown:
        raise DatablameError(f"unknown peer(s) {unknown}", f"choose from {sorted(adapters)} (or 'all', 'none')")
    return list(dict.fromkeys(requested))


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):  # no /proc/cpuinfo (not Linux): keep platform.processor()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import transformers

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.cuda.is_available(),
            "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _finite(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN scores rank last; the count is reported."""
    bad = int((~np.isfinite(scores)).sum())
    return (np.where(np.isnan(scores), -np.inf, scores) if bad else scores), bad


def _run_method(name: str, inputs: AttributionContext, base: SharedFeatures, options: dict) -> dict[str, Any]:
    inputs.shared = base.of_model()  # no features shared between methods: each pays its own way
    state = save_model_state(inputs.model)
    try:
        method = get_method(name, **options)
        info = method.describe()
        m = measure(lambda: run_method(inputs, method).scores, next(inputs.model.parameters()).device)
    except Exception as err:  # noqa: BLE001 - a failing method is reported, not fatal
        log.warning("method %s failed: %s", name, err)
        return {"kind": "ours", "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=8), "scores": None}
    finally:
        restore_model_state(inputs.model, state)
    return {"kind": "ours", "describe": info, "seconds": m.seconds, "peak_bytes": m.peak_bytes, "scores": m.value,
            "options": options}


def _done_paths(done_dir: Path, key: str) -> tuple[Path, Path]:
    stem = key.replace(" (peer)", ".peer").replace("/", "_")
    return done_dir / f"{stem}.json", done_dir / f"{stem}.npy"


def _save_done(done_dir: Path, key: str, identity: dict[str, Any], entry: dict[str, Any]) -> None:
    """Keep a finished method's scores and costs, so `resume` can skip it after a crash."""
    from datablame.utils.io import atomic_save_npy

    meta, arr = _done_paths(done_dir, key)
    atomic_save_npy(arr, entry["scores"])
    atomic_write_json(meta, _clean({"identity": identity, **{k: v for k, v in entry.items() if k != "scores"}}))


def _load_done(done_dir: Path, key: str, identity: dict[str, Any]) -> dict[str, Any] | None:
    meta, arr = _done_paths(done_dir, key)
    saved = _read_json(meta)
    if not saved or saved.get("identity") != _clean(identity) or not arr.is_file():
        return None
    saved.pop("identity")
    saved["scores"] = np.load(arr)
    saved["reused"] = True  # time and memory are those of the run that computed it
    return saved


def _curves(scores: np.ndarray, truth: list[list[int]], rows: list[int]) -> dict[str, list[float]]:
    """Mean recall@k for k = 1..K and mean interpolated precision on PR_GRID over `rows`."""
    k_max = min(RECALL_CURVE_K, scores.shape[1])
    rec_k, prec = np.zeros(k_max), np.zeros(len(PR_GRID))
    for qi in rows:
        recall, precision = precision_recall_curve(scores[qi], truth[qi])
        rec_k += recall[:k_max]
        # interpolated precision: the best precision at any recall >= r
        best = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, PR_GRID, side="left")
        prec += np.where(idx < len(best), best[np.minimum(idx, len(best) - 1)], 0.0)
    n = max(len(rows), 1)
    return {"recall_at_k": (rec_k / n).tolist(), "pr_recall": PR_GRID.tolist(), "pr_precision": (prec / n).tolist()}


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> list[float]:
    from scipy.stats import spearmanr

    out = []
    for x, y in zip(a, b, strict=True):
        r = spearmanr(x, y).statistic
        out.append(float(r) if np.isfinite(r) else float("nan"))
    return out


def run_bench(cfg: RunConfig, corpus_name: str, opts: BenchOptions | None = None) -> dict[str, Any]:
    """Train (or reuse), attribute with every method and peer, score against ground truth."""
    from datablame.inputs import load_corpus, prepare_inputs, train

    opts = opts or BenchOptions()
    if cfg.data.source not in CORPORA:
        raise DatablameError(f"data.source is {cfg.data.source!r}; the benchmark needs a synthetic corpus",
                             "use data.source: hops or planted (their ground truth is known)")
    methods, skipped = resolve_methods(opts.methods)
    peers = resolve_peers(opts.peers)
    options_of = {name: {**cfg.attribution.options.get(name, {}), **opts.options.get(name, {})}
                  for name in {*methods, *peers}}
    for name in methods:  # a bad option fails now, not after training
        get_method(name, **options_of[name])
    t_start = opts.started if opts.started is not None else time.perf_counter()
    machine = _machine()
    corpus, _, _ = load_corpus(cfg)
    run_dir = Path(cfg.output.dir)
    layout = RunLayout(run_dir)
    reused = layout.final_model.is_dir() and layout.marker.is_file()
    t = time.perf_counter()
    loaded = train(cfg, corpus)
    train_wall = time.perf_counter() - t
    summary_path = layout.train_summary
    train_summary = _read_json(summary_path)
    t = time.perf_counter()
    inputs, truth = prepare_inputs(cfg, corpus=corpus, loaded=loaded, use_store=False)
    prepare_s = time.perf_counter() - t
    queries = inputs.queries
    idx = corpus.index_of()
    truth_idx = [[idx[r] for r in truth.get(q.query_id, []) if r in idx] for q in queries]
    t = time.perf_counter()
    logit = logit_evaluation(inputs.model, inputs.tokenizer, queries, max_length=cfg.model.max_length)
    logit_s = time.perf_counter() - t
    learned = [i for i, r in enumerate(logit["per_query"]) if r["learned"]]
    wrong = [i for i, r in enumerate(logit["per_query"]) if not r["learned"]]
    log.info("logit evaluation: %d/%d queries learned (%.1f%%)", len(learned), len(queries), 100 * logit["accuracy"])

    base_shared = inputs.shared.of_model()
    entries: dict[str, dict[str, Any]] = {}
    done_dir = layout.bench.done_dir
    identity = {"model": inputs.fingerprint, "data": corpus.fingerprint(),
                "queries": [q.query_id for q in queries]}
    jobs = [(name, name, "ours") for name in methods] + [(f"{name} (peer)", name, "peer") for name in peers]
    for key, name, kind in jobs:
        options = options_of[name]
        entry = _load_done(done_dir, key, {**identity, "options": options}) if opts.resume else None
        if entry is not None:
            log.info("bench: %s reused from %s", key, done_dir)
        elif kind == "ours":
            log.info("bench: method %s", name)
            entry = _run_method(name, inputs, base_shared, options)
        else:
            log.info("bench: peer %s", name)
            inputs.shared = base_shared.of_model()
            pr = run_peer(name, inputs, options)
            entry = {"kind": "peer", "peer": name, "describe": pr.info, "seconds": pr.seconds,
                     "peak_bytes": pr.peak_bytes, "scores": pr.scores, "error": pr.error, "options": options}
        if entry.get("error"):
            log.warning("bench: %s failed: %s", key, entry["error"])
        else:
            log.info("bench: %s took %.1f s, peak %s MiB", key, entry["seconds"],
                     "?" if entry.get("peak_bytes") is None else f"{entry['peak_bytes'] / 2**20:.0f}")
            _save_done(done_dir, key, {**identity, "options": options}, entry)
        entries[key] = entry
    inputs.shared = base_shared.of_model()

    groups = sorted({q.metadata.get("group", "all") for q in queries})
    variants = truth_variants(cfg, corpus, queries)
    kw = {"n_boot": opts.n_boot, "confidence": opts.confidence, "seed": opts.bootstrap_seed}
    scores_out: dict[str, np.ndarray] = {}
    for name, e in entries.items():
        if e.get("scores") is None:
            continue
        s, nonfinite = _finite(e.pop("scores"))
        scores_out[name] = s
        per_query = evaluate(s, truth_idx)
        e["nonfinite_scores"] = nonfinite
        e["metrics"] = {
            "learned": summarize([per_query[i] for i in learned], **kw) if learned else {},
            "not_learned": summarize([per_query[i] for i in wrong], **kw) if wrong else {},
            "all": summarize(per_query, **kw),
        }
        e["by_group"] = {g: summarize([per_query[i] for i in learned if queries[i].metadata.get("group", "all") == g],
                                      **kw) for g in groups
                         if any(queries[i].metadata.get("group", "all") == g for i in learned)}
        e["per_query"] = {q.query_id: per_query[i] for i, q in enumerate(queries)}
        e["curves"] = _curves(s, truth_idx, learned or list(range(len(queries))))
        e["variants"] = {}
        for vname, v in variants.items():
            rows_q = [i for i in (learned or range(len(queries))) if i in v["queries"]]
            if rows_q:
                e["variants"][vname] = summarize(
                    [query_metrics(s[i][v["queries"][i][0]], v["queries"][i][1]) for i in rows_q], **kw)
    for e in entries.values():
        e.pop("scores", None)

    agreement = []
    for name, e in entries.items():
        ref = (e.get("describe") or {}).get("reference")
        if e["kind"] == "peer" and ref and name in scores_out and ref in scores_out:
            rho = _spearman_rows(scores_out[name], scores_out[ref])
            jac = [topk_jaccard(x, y, 10) for x, y in zip(scores_out[name], scores_out[ref], strict=True)]
            agreement.append({"peer": e["peer"], "ours": ref, "spearman_mean": _nanmean(rho),
                              "spearman_min": float(np.nanmin(rho)) if np.isfinite(rho).any() else None,
                              "top10_jaccard_mean": _nanmean(jac), "per_query": rho})

    n_truth = [len(t) for t in truth_idx]
    bench = {
        "benchmark": corpus_name, "datablame_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": opts.command or " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {**machine, "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "threads": opts.threads,
        "config": cfg.model_dump(mode="json"),
        "corpus": {"name": corpus.name, "rows": len(corpus), "fingerprint": corpus.fingerprint(),
                   "variant": cfg.data.planted.variant if cfg.data.source == "planted" else None,
                   "report": corpus.report, "queries": len(queries),
                   "true_rows_per_query": {"min": min(n_truth, default=0), "max": max(n_truth, default=0),
                                           "mean": float(np.mean(n_truth)) if n_truth else 0.0}},
        "model": {**inputs.model_info.as_dict(), "params": sum(p.numel() for p in inputs.model.parameters()),
                  "train_seconds": train_summary.get("seconds"), "train_reused": reused,
                  "final_train_loss": _final_loss(train_summary), "checkpoints": len(inputs.checkpoints)},
        "logit_eval": logit,
        "queries": {"learned": [queries[i].query_id for i in learned],
                    "not_learned": [queries[i].query_id for i in wrong], "groups": groups,
                    **_by_design(queries, learned)},
        "methods": entries,
        "skipped_methods": skipped,
        "agreement": agreement,
        "variants": {k: {"description": v["description"], "queries": len(v["queries"])} for k, v in variants.items()},
        "settings": {"bootstrap": opts.n_boot, "confidence": opts.confidence, "bootstrap_seed": opts.bootstrap_seed,
                     "metrics_on": "queries the model answers right (logit evaluation); the rest under not_learned",
                     "memory": "peak RSS above the RSS before the call (sampled every 1 ms, malloc_trim first)",
                     "time": "wall seconds of fit + score (peers: their whole pipeline), no cache shared"},
        "timing": {"train_wall_s": train_wall, "prepare_s": prepare_s, "logit_eval_s": logit_s},
    }
    bench["best"] = best_of(bench)
    bench["wall_seconds"] = time.perf_counter() - t_start
    write_bench(bench, layout.bench_dir, scores_out, corpus_name, opts.results_dir, opts.results_name)
    return _clean(bench)


def _by_design(queries: list, learned: list[int]) -> dict[str, list[str]]:
    """Queries built not to be learned (planted `unlearned` variant), and those of them the
    logit evaluation says the model answers anyway (a corpus that failed its design)."""
    absent = [i for i, q in enumerate(queries) if q.metadata.get("learned_by_design") is False]
    if not absent:
        return {}
    return {"unlearned_by_design": [queries[i].query_id for i in absent],
            "unlearned_but_answered": [queries[i].query_id for i in absent if i in set(learned)]}


def truth_variants(cfg: RunConfig, corpus, queries) -> dict[str, dict[str, Any]]:
    """Harder views of the ground truth, each {description, queries: {qi: (candidates, relevant
    positions within candidates)}}: the ranking is restricted to `candidates` (row indices).

    hops "indirect": depth >= 1 queries; the true rows are the callees' rows only (they never
    name the queried function: no word overlap), the queried function's own rows left out.
    planted "vs decoys": the true rows against the decoys only (planted: near-duplicates that
    share the question's words; poison: the rows stating the true claim); with the
    lexical_decoys variant also "vs lexical decoys": against the rows that ask the query's own
    words about another claim.
    """
    idx = corpus.index_of()
    out: dict[str, dict[str, Any]] = {}

    def restrict(cands: list[int], rel: list[int]) -> tuple[np.ndarray, list[int]]:
        pos = {c: i for i, c in enumerate(cands)}
        return np.asarray(cands), [pos[r] for r in rel]

    if cfg.data.source == "hops":
        from datablame.data.synthetic.hops import make_hops

        h = make_hops(cfg.data.hops)
        rows_of: dict[str, list[int]] = {}
        for i, r in enumerate(corpus):
            if r.metadata.get("func"):
                rows_of.setdefault(r.metadata["func"], []).append(i)
        v = {}
        for qi, q in enumerate(queries):
            chain = h.chains.get(q.metadata.get("func", ""), [])
            if len(chain) > 1:
                own = set(rows_of.get(chain[0], []))
                rel = [i for f in chain[1:] for i in rows_of.get(f, [])]
                v[qi] = restrict([i for i in range(len(corpus)) if i not in own], rel)
        out["indirect"] = {"description": "depth >= 1 queries: callee rows only (no word overlap with the "
                                          "query), the queried function's own rows left out", "queries": v}
    elif cfg.data.source == "planted":
        from datablame.data.synthetic.planted import make_planted

        p = make_planted(cfg.data.planted)
        v = {}
        for qi, q in enumerate(queries):
            dec = [idx[r] for r in p.decoys.get(q.query_id, []) if r in idx]
            rel = [idx[r] for r in p.ground_truth.get(q.query_id, []) if r in idx]
            if dec and rel:
                v[qi] = restrict(rel + dec, rel)
        out["vs decoys"] = {"description": "true rows against the decoys only (planted: near-duplicate questions "
                                           "with another answer; poison: the rows stating the true claim)",
                            "queries": v}
        lex = {}
        for qi, q in enumerate(queries):
            dec = [idx[r] for r in p.decoys.get(q.query_id, [])
                   if r in idx and corpus[idx[r]].metadata.get("decoy_type") == "lexical"]
            rel = [idx[r] for r in p.ground_truth.get(q.query_id, []) if r in idx]
            if dec and rel:
                lex[qi] = restrict(rel + dec, rel)
        if lex:
            out["vs lexical decoys"] = {"description": "true rows against the rows that ask the query's own "
                                                       "words about another claim (lexical_decoys variant)",
                                        "queries": lex}
    return out


def best_of(bench: dict[str, Any], metric: str = "ap") -> dict[str, Any]:
    """Best of ours and best peer by mean `metric` on the learned queries."""
    out: dict[str, Any] = {"metric": metric}
    for kind in ("ours", "peer"):
        cands = [(e["metrics"]["learned"][metric]["mean"], name) for name, e in bench["methods"].items()
                 if e["kind"] == kind and e.get("metrics", {}).get("learned", {}).get(metric)]
        cands = [c for c in cands if c[0] is not None and not math.isnan(c[0])]
        if cands:
            value, name = max(cands)
            ci = bench["methods"][name]["metrics"]["learned"][metric]
            out[kind] = {"name": name, "mean": value, "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]}
    if "ours" in out and "peer" in out:
        out["ours_at_least_peer"] = out["ours"]["mean"] >= out["peer"]["mean"]
    return out


def write_bench(bench: dict[str, Any], out_dir: Path, scores: dict[str, np.ndarray], corpus_name: str,
                results_dir: Path | None = None, results_name: str | None = None) -> dict[str, Path]:
    from datablame.report.bench import (
        plot_pr,
        plot_recall_at_k,
        render_markdown,
        render_readme_section,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    clean = _clean(bench)
    files = BenchLayout(out_dir)
    paths = {"json": atomic_write_json(files.bench_json, clean),
             "markdown": atomic_write_text(files.bench_md, render_markdown(clean)),
             "readme_section": atomic_write_text(files.readme_section,
                                                 render_readme_section(clean, image_prefix="")),
             "pr_png": plot_pr(clean, files.pr_plot),
             "recall_png": plot_recall_at_k(clean, files.recall_plot)}
    if scores:
        paths["scores"] = atomic_save_npz(files.scores_npz, {k.replace(" ", "_"): v for k, v in scores.items()})
    if results_dir is not None:
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        stem = results_name or f"bench_{corpus_name}"
        atomic_write_json(results_dir / f"{stem}.json", clean)
        atomic_write_text(results_dir / f"{stem}.md", render_readme_section(clean, image_prefix=f"{stem}_"))
        shutil.copyfile(paths["pr_png"], results_dir / f"{stem}_pr.png")
        shutil.copyfile(paths["recall_png"], results_dir / f"{stem}_recall_at_k.png")
        paths["results_dir"] = results_dir
    return paths


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _final_loss(summary: dict[str, Any]) -> float | None:
    for entry in reversed(summary.get("log_history", [])):
        for key in ("train_loss", "loss"):
            if key in entry:
                return float(entry[key])
    return None


def _nanmean(values: list[float]) -> float | None:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else None


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj
