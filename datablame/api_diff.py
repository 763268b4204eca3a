"""`datablame diff`: the config-driven diff (scan -> attribute -> report) and its offline demo.

Stages, each cached in `diff.out_dir` (default `<run>/diff`) and resumable:

- `scan`: every (prompt, alpha) cell sampled and labelled (`datablame.diff.run_scan`; finished
  cells of `phase_scan.json` are never redrawn);
- `attribute`: the samples labelled as the behaviour are blamed on the run's corpus (the
  `data:` section) with the after-model as the attributed model; `blame.json` is written
  atomically, and reused when its scan samples, corpus, model and settings are unchanged;
- `patch`: per method, its top-K rows dropped and the after-model LoRA-fine-tuned, against two
  controls (no removal; K random rows), seeds per arm, each patched model scanned at one alpha
  (`datablame.api_diff_patch`, `datablame.diff.patching`); finished arms are skipped by a rerun;
- `report`: `diff_report.md` (rates per alpha, most blamed rows, agreement) and the rates PNG,
  plus `final_results.json`/`.png` and `case_study.md` (`datablame.diff.final`).

`diff_demo` runs the same steps on the offline demo (`datablame.diff.demo`) and writes a
benchmarks-style `diff_demo.json`: rate per alpha with Wilson intervals, recall@20 of the
planted rows per method, the patch comparison (planted-row removal vs both controls), and timings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datablame.config import ModelConfig, RunConfig
from datablame.data.corpus import Corpus, Query
from datablame.errors import DatablameError
from datablame.layout import DiffLayout, RunLayout
from datablame.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("datablame")

STAGES = ("scan", "attribute", "patch", "report")
BLAME_FILE, REPORT_FILE, DEMO_FILE = "blame.json", "diff_report.md", "diff_demo.json"
DEMO_METHODS = ("grad_cosine", "bm25", "embedding_cosine")


def diff_out_dir(cfg: RunConfig) -> Path:
    return Path(cfg.diff.out_dir) if cfg.diff.out_dir else RunLayout(cfg.output.dir).diff_dir


def _stages(stage: str) -> list[str]:
    if stage == "all":
        return list(STAGES)
    if stage not in STAGES:
        raise DatablameError(f"unknown diff stage {stage!r}", f"use one of {', '.join(STAGES)} or all")
    return [stage]


def _model_specs(cfg: RunConfig) -> tuple[str, str | None, str | None]:
    """(before, after, adapter) of the diff, with the run's defaults filled in."""
    d, layout = cfg.diff, RunLayout(cfg.output.dir)
    before = d.before or (str(layout.base_model) if layout.base_model.is_dir() else cfg.model.name_or_path)
    if not before:
        raise DatablameError("diff.before is not set and the run has no model/base to fall back on",
                             "set diff.before to the model before fine-tuning (a directory or hub id)")
    if d.adapter:
        return before, None, d.adapter
    after = d.after or str(layout.final_model)
    if not d.after and not layout.final_model.is_dir():
        raise DatablameError(f"diff.after is not set and the run has no trained model ({layout.final_model})",
                             "set diff.after (or diff.adapter), or run `datablame train` first")
    return before, after, None


def _prompts(cfg: RunConfig) -> list:
    from datablame.diff.scan import load_prompts

    if not cfg.diff.prompts_file:
        raise DatablameError("diff.prompts_file is not set: the scan has no prompts",
                             'set diff.prompts_file to a JSONL file, one {"prompt": ...} per line')
    try:
        return load_prompts(cfg.diff.prompts_file)
    except DatablameError as err:
        raise DatablameError(f"diff.prompts_file: {err.problem}", err.fix) from None


def _scan_settings(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.diff
    return {"alphas": d.alphas, "n_samples": d.n_samples, "sampling": d.sampling.model_dump(),
            "classifier": d.classifier.model_dump()}


def _check_pool(pool_size: int, corpus: Corpus, field: str = "diff.pool_size") -> None:
    if pool_size > len(corpus):
        raise DatablameError(f"{field} ({pool_size}) is larger than the corpus of {len(corpus)} rows",
                             f"set {field} to at most {len(corpus)}")


def diff(cfg: RunConfig, stage: str = "all") -> dict[str, Any]:
    """Run `stage` (scan, attribute, report or all) of the config's `diff:` section; returns
    {"out_dir", "scan": summary, "blame": summary, "report": path} for the stages run."""
    todo = _stages(stage)
    out = diff_out_dir(cfg)
    methods = list(cfg.diff.methods or cfg.attribution.methods)
    # everything a stage needs is checked before any model is loaded
    prompts = _prompts(cfg) if "scan" in todo else None
    corpus = None
    if {"attribute", "patch"} & set(todo):
        from datablame.inputs import load_corpus

        if "attribute" in todo and not methods:
            raise DatablameError("diff.methods and attribution.methods are both empty: nothing to blame with",
                                 "set diff.methods, e.g. [grad_cosine, bm25]")
        corpus = load_corpus(cfg)[0]
        if "attribute" in todo:
            _check_pool(cfg.diff.pool_size, corpus)
        _check_top_k(cfg, corpus)
    if "patch" in todo and "attribute" not in todo:
        from datablame.api_diff_patch import check_patch

        assert corpus is not None
        check_patch(cfg, corpus, out)  # blame.json and K against the corpus and the pool, before any model
    if "scan" in todo:
        from datablame.diff.classify import make_classifier

        make_classifier(cfg.diff.classifier.model_dump())  # bad rules / missing keys before loading models
    before, after, adapter = _model_specs(cfg) if {"scan", "attribute", "patch"} & set(todo) else ("", None, None)
    summary: dict[str, Any] = {"out_dir": str(out)}
    if "scan" in todo:
        summary["scan"] = _scan_stage(cfg, prompts or [], out, before, after, adapter)
    if "attribute" in todo:
        assert corpus is not None
        summary["blame"] = _attribute_stage(cfg, corpus, methods, out, after, adapter, before)
    if "patch" in todo:
        from datablame.api_diff_patch import patch_stage

        assert corpus is not None
        summary["patch"] = patch_stage(cfg, corpus, out, before, after, adapter)
    if "report" in todo:
        from datablame.api_diff_patch import final_report

        summary["report"] = str(write_diff_report(out))
        summary["final"] = final_report(out)
    return summary


def _check_top_k(cfg: RunConfig, corpus: Corpus) -> None:
    """diff.patch.top_k must leave rows to train on and fit in the pool the methods rank."""
    k, n = cfg.diff.patch.top_k, len(corpus)
    if k >= n:
        raise DatablameError(f"diff.patch.top_k ({k}) is not smaller than the fine-tuning set of {n} rows: "
                             "nothing would be left to train on", f"set diff.patch.top_k to at most {n - 1}")
    if k > cfg.diff.pool_size:
        raise DatablameError(f"diff.patch.top_k ({k}) is larger than diff.pool_size ({cfg.diff.pool_size}), the "
                             "candidate rows each method ranks", f"set diff.patch.top_k to at most {cfg.diff.pool_size}"
                             " or raise diff.pool_size")


def _scan_stage(cfg: RunConfig, prompts: list, out: Path, before: str, after: str | None,
                adapter: str | None) -> dict[str, Any]:
    from datablame.diff.pair import load_pair
    from datablame.diff.scan import run_scan

    device = cfg.diff.device or cfg.model.device
    pair = load_pair(before, after, adapter=adapter, device=device, dtype=cfg.diff.dtype)
    doc = run_scan(pair, prompts, _scan_settings(cfg), out, overwrite=cfg.diff.overwrite)
    return {k: doc[k] for k in ("cells_done", "cells_left", "complete", "pooled")}


def _read_scan(out: Path) -> dict[str, Any]:
    from datablame.diff.scan import SCAN_FILE

    path = out / SCAN_FILE
    if not path.is_file():
        raise DatablameError(f"no scan in {out} ({SCAN_FILE} is missing)", "run `datablame diff --stage scan` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DatablameError(f"{path} is unreadable ({err.__class__.__name__})",
                             "rerun `datablame diff --stage scan` with diff.overwrite: true") from None


def _after_model(cfg: RunConfig, before: str, after: str | None, adapter: str | None):
    from datablame.models.loading import load_model

    device = cfg.diff.device or cfg.model.device
    if adapter:
        mc = ModelConfig(kind="hf", name_or_path=before, adapter=adapter, device=device, dtype=cfg.diff.dtype)
        return load_model(mc)
    path = Path(str(after)).expanduser()
    mc = ModelConfig(kind="hf", name_or_path=str(after), device=device, dtype=cfg.diff.dtype)
    return load_model(mc, path_override=str(path)) if path.is_dir() else load_model(mc)


def _context(cfg: RunConfig, corpus: Corpus, loaded):
    """The after-model and the corpus as an attribution context without queries (as
    `datablame.diff.demo_context` builds it)."""
    from datablame.features.context import AttributionContext, ModelInfo
    from datablame.models.tokenize import Encoded, encode_pairs

    loaded.model.eval()
    rows = encode_pairs(loaded.tokenizer, [r.prompt for r in corpus], [r.completion for r in corpus],
                        max_length=cfg.model.max_length, loss_on=cfg.model.loss_on)
    return AttributionContext(
        model=loaded.model, tokenizer=loaded.tokenizer, corpus=corpus, rows=rows, queries=[],
        query_rows=Encoded([], []), attribution=cfg.attribution, model_cfg=cfg.model, work_dir=None,
        model_info=ModelInfo(source=loaded.source, fingerprint=loaded.fingerprint))


def _queries_digest(queries: Sequence[Query]) -> str:
    h = hashlib.sha256()
    for q in queries:
        h.update(f"{q.query_id}\x00{q.prompt}\x00{q.completion}\x01".encode())
    return h.hexdigest()[:16]


def _attribute_stage(cfg: RunConfig, corpus: Corpus, methods: list[str], out: Path, after: str | None,
                     adapter: str | None, before: str) -> dict[str, Any]:
    from datablame.diff.blame import blame_surfaced, surfaced_queries

    d = cfg.diff
    queries = surfaced_queries(_read_scan(out), alphas=d.blame_alphas, max_queries=d.max_queries)
    key = {"format": 2, "queries": _queries_digest(queries), "n_queries": len(queries), "corpus": corpus.fingerprint(),
           "after": adapter and f"{before} + {adapter}" or after, "methods": methods, "pool_size": d.pool_size,
           "top_k": d.top_k, "options": {m: cfg.attribution.options.get(m, {}) for m in methods}}
    path = out / BLAME_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old.get("key") == key:
            log.info("diff: %s is up to date, reused", path)
            return _blame_summary(old)
    ctx = _context(cfg, corpus, _after_model(cfg, before, after, adapter))
    res = blame_surfaced(ctx, queries, methods, pool_size=d.pool_size, top_k=d.top_k)
    doc = {"key": key, **res.to_dict()}
    atomic_write_json(path, doc)
    return _blame_summary(doc)


def _blame_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {"queries": len(doc["queries"]), "pool": doc["pool"]["size"],
            "top": {m: rows[:3] for m, rows in doc["blame"].items()}}


def write_diff_report(out: str | Path) -> Path:
    """`<out>/diff_report.md` from the scan (and blame.json when present) and the rates PNG."""
    from datablame.diff.rates import plot_rates
    from datablame.diff.scan import PLOT_FILE

    out = Path(out)
    scan = _read_scan(out)
    plot_rates(scan.get("cells", []), out / PLOT_FILE)
    key = scan.get("key", {})
    lines = ["# Behaviour diff", "", f"- before: `{key.get('before')}`", f"- after: `{key.get('after')}`",
             f"- amplification: {scan.get('amplification', '')}",
             f"- samples per (prompt, alpha): {key.get('n_samples')}; prompts: {len(scan.get('prompts', []))}",
             f"- classifier: {json.dumps(key.get('classifier'))}", "",
             "## Rate per alpha (all prompts pooled)", "",
             "| alpha | hits | n | rate | Wilson 95 % |", "|---:|---:|---:|---:|---|"]
    for p in scan.get("pooled", []):
        rate = "n/a" if p["rate"] is None else f"{p['rate']:.3f}"
        lines.append(f"| {p['alpha']:g} | {p['hits']} | {p['n']} | {rate} | [{p['ci_low']:.3f}, {p['ci_high']:.3f}] |")
    lines += ["", f"![rates]({PLOT_FILE})", ""]
    blame_path = out / BLAME_FILE
    if blame_path.is_file():
        blame = json.loads(blame_path.read_text(encoding="utf-8"))
        lines += ["## Most blamed training rows", "",
                  f"{len(blame['queries'])} surfaced samples scored over a BM25 pool of {blame['pool']['size']} rows; "
                  f"blame = {blame['blame_unit']}.", ""]
        for m, rows in blame["blame"].items():
            lines.append(f"- **{m}**: " + ", ".join(f"`{r['row_id']}` ({r['blame']:.2f})" for r in rows[:5]))
        pairs = (blame.get("agreement") or {}).get("pairs", [])
        if pairs:
            lines += ["", "Agreement (mean over queries):", ""]
            lines += [f"- {p['a']} vs {p['b']}: " + ", ".join(f"{k} {v:.2f}" for k, v in p.items()
                                                             if k not in ("a", "b") and isinstance(v, float))
                      for p in pairs]
    else:
        lines.append("(no blame.json yet: run `datablame diff --stage attribute`)")
    lines += _patch_lines(DiffLayout(out))
    return atomic_write_text(out / REPORT_FILE, "\n".join(lines) + "\n")


def _patch_lines(layout: DiffLayout) -> list[str]:
    """The report's patching section (from patching.json), or a pointer to the stage."""
    if not layout.patch_json.is_file():
        return ["", "(no patching yet: run `datablame diff --stage patch`)"]
    doc = json.loads(layout.patch_json.read_text(encoding="utf-8"))
    cmp = doc["comparison"]
    lines = ["", "## Patching against controls", "",
             f"Each method's top {doc['top_k']} rows removed, the after-model LoRA-fine-tuned ({doc['steps']} steps, "
             f"r {doc['r']}, {doc['seeds']} seeds per arm), rescanned at alpha {doc['alpha']:g}; {cmp['ci_method']}.", "",
             "| arm | rows removed | hits / n | rate | Wilson 95 % | per-seed rates | verdict |",
             "|---|---:|---:|---:|---|---|---|"]
    for a in cmp["arms"]:
        v = cmp["verdicts"].get(a["arm"])
        rate = "n/a" if a["rate"] is None else f"{a['rate']:.3f}"
        lines.append(f"| {a['arm']} | {a['n_removed']} | {a['hits']}/{a['n']} | {rate} | "
                     f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}] | "
                     + ", ".join("n/a" if x["rate"] is None else f"{x['rate']:.3f}" for x in a["seeds"])
                     + f" | {v['verdict'] + ' (' + v['why'] + ')' if v else 'control'} |")
    lines += ["", f"![patching]({layout.patching_png.name})", "",
              f"Final figure: `{layout.final_png.name}`; traced example: `{layout.case_study_md.name}`."]
    return lines


def diff_demo(out_dir: str | Path = "runs/diff-demo", *, alphas: Sequence[float] = (0.0, 4.0), n_samples: int = 40,
              methods: Sequence[str] = DEMO_METHODS, pool_size: int = 100, max_queries: int = 20, k: int = 20,
              max_new_tokens: int = 12, top_p: float = 0.8, seed: int = 0, threads: int | None = 1,
              patch: bool = True, patch_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The offline demo end to end: train (or reuse) the before/after pair, scan `alphas`,
    blame the surfaced samples with `methods` over a BM25 pool (at most the corpus: the demo's
    fine-tuning corpus has 58 rows), patch (`patch`: each method's top K rows removed and the
    after-model LoRA-fine-tuned, against no removal and K random rows; `patch_settings` override
    `api_diff_patch.DEMO_PATCH`), and write `<out_dir>/diff_demo.json`; returns it.
    `threads`: torch threads while it runs (1 is fastest for these tiny models; None = leave)."""
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _diff_demo(Path(out_dir), list(alphas), n_samples, list(methods), pool_size, max_queries, k,
                          max_new_tokens, top_p, seed, patch_settings if patch else None, patch)
    finally:
        torch.set_num_threads(old_threads)


def _diff_demo(out: Path, alphas: list[float], n_samples: int, methods: list[str], pool_size: int, max_queries: int,
               k: int, max_new_tokens: int, top_p: float, seed: int, patch_settings: dict[str, Any] | None = None,
               patch: bool = False) -> dict[str, Any]:
    import torch

    from datablame.diff.blame import blame_surfaced, surfaced_queries
    from datablame.diff.demo import build_diff_demo, demo_context
    from datablame.diff.pair import load_pair
    from datablame.diff.scan import PLOT_FILE, ScanSettings, load_prompts, run_scan

    if not methods:
        raise DatablameError("the diff demo needs at least one method", "e.g. --methods grad_cosine,bm25")
    settings = ScanSettings.model_validate({"alphas": alphas, "n_samples": n_samples,
                                            "sampling": {"max_new_tokens": max_new_tokens, "top_p": top_p, "seed": seed}})
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    demo = build_diff_demo(out, seed=seed)
    timings["build_models_s"] = time.perf_counter() - t0
    settings = settings.model_copy(update={"classifier": settings.classifier.model_validate(demo.classifier())})
    t = time.perf_counter()
    pair = load_pair(str(demo.before_dir), str(demo.after_dir), device="cpu")
    scan = run_scan(pair, load_prompts(demo.prompts_file), settings, out / "scan", overwrite=True)
    timings["scan_s"] = time.perf_counter() - t
    pooled = scan["pooled"]
    queries = surfaced_queries(scan, max_queries=max_queries)
    pool = min(pool_size, len(demo.corpus))
    t = time.perf_counter()
    res = blame_surfaced(demo_context(demo), queries, methods, pool_size=pool, top_k=min(k, pool))
    timings["blame_s"] = time.perf_counter() - t
    timings.update({f"method_{m}_s": s for m, s in res.seconds.items()})
    patch_doc = None
    if patch:
        from datablame.api_diff_patch import demo_patch

        t = time.perf_counter()
        patch_doc = demo_patch(demo, pair, res.to_dict(), scan, settings, out, overrides=patch_settings)
        timings["patch_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    planted = set(demo.planted_row_ids)
    recall = {}
    for m in res.scores:
        top = [r for r, _ in res.top_rows(m, k)]
        per_query = [len(planted & {res.pool_row_ids[i] for i in row.argsort()[::-1][:k]}) / len(planted)
                     for row in res.scores[m]]
        recall[m] = {f"recall@{k}": len(planted & set(top)) / len(planted),
                     f"mean_query_recall@{k}": sum(per_query) / len(per_query),
                     "planted_ranks": sorted(top.index(r) + 1 for r in planted if r in top)}
    by_alpha = {p["alpha"]: p for p in pooled}
    lo, hi = min(by_alpha), max(by_alpha)
    doc = {
        "benchmark": "diff_demo",
        "what": "offline diff demo: a tiny before/after Llama pair whose fine-tuning corpus plants a rare phrase "
                f"({demo.phrase!r}) in {len(planted)} rows; amplified sampling surfaces it, methods blame it",
        "settings": {"alphas": settings.alphas, "n_samples": n_samples, "prompts": len(scan["prompts"]),
                     "sampling": settings.sampling.model_dump(), "classifier": demo.classifier(), "methods": methods,
                     "pool_size_asked": pool_size, "pool_size": pool, "corpus_rows": len(demo.corpus),
                     "max_queries": max_queries, "k": k, "seed": seed},
        "rate_unit": "fraction of samples showing the phrase, all prompts pooled; Wilson 95 % interval",
        "rates": pooled,
        "rate_rise": {"alpha_low": lo, "alpha_high": hi,
                      "higher": (by_alpha[hi]["rate"] or 0) > (by_alpha[lo]["rate"] or 0),
                      "ci_disjoint": by_alpha[hi]["ci_low"] > by_alpha[lo]["ci_high"]},
        "surfaced_queries": len(res.queries),
        "planted_row_ids": sorted(planted),
        "recall_unit": f"share of the planted rows among the {k} rows most blamed over all surfaced samples "
                       "(mean percentile); mean_query_recall: the same per surfaced sample, averaged",
        "recall": recall,
        "agreement": res.agreement,
        "timings": timings,
        "threads": torch.get_num_threads(),
        "files": {"scan": str(out / "scan" / "phase_scan.json"), "plot": str(out / "scan" / PLOT_FILE)},
    }
    if patch_doc is not None:
        doc["patch"] = _demo_patch_summary(patch_doc, planted)
        doc["files"].update(patch_doc["files"])
    atomic_write_json(out / DEMO_FILE, doc)
    return doc


def _demo_patch_summary(pdoc: dict[str, Any], planted: set[str]) -> dict[str, Any]:
    """The demo's patch figures: per arm the pooled rate (Wilson 95 %) and per-seed rates, per
    method its verdict and how many planted rows its removal held, and the headline comparison."""
    cmp = pdoc["comparison"]
    arms = {a["arm"]: a for a in cmp["arms"]}
    methods = list(cmp["verdicts"])
    best = min(methods, key=lambda m: arms[m]["rate"])
    return {
        "what": f"each method's top {pdoc['top_k']} rows removed from the {pdoc['corpus_rows']}-row fine-tuning set, "
                f"the after-model LoRA-fine-tuned ({pdoc['steps']} steps, r {pdoc['r']}, {pdoc['seeds']} seeds); "
                f"controls: all rows (baseline), all rows minus {pdoc['top_k']} random rows; scan at alpha "
                f"{pdoc['alpha']:g}, {pdoc['n_samples']} samples per prompt per seed",
        "settings": pdoc["settings"], "alpha": pdoc["alpha"], "selection": pdoc["selection"],
        "random_control": pdoc["random_control"], "ci_method": cmp["ci_method"],
        "unpatched": cmp["before"],
        "arms": [{k: a[k] for k in ("arm", "kind", "n_removed", "hits", "n", "rate", "ci_low", "ci_high")}
                 | {"seed_rates": [s["rate"] for s in a["seeds"]]} for a in cmp["arms"]],
        "verdicts": {m: {"verdict": v["verdict"], "rate": v["rate"], "vs": v["vs"]} for m, v in cmp["verdicts"].items()},
        "planted_removed": {m: sum(r["row_id"] in planted for r in rows) for m, rows in pdoc["removals"].items()},
        "random_planted_removed": [sum(r in planted for r in s["removed"]) for s in arms["random"]["seeds"]],
        "best_method": best,
        "planted_removal_drops": {
            "best_rate": arms[best]["rate"], "baseline_rate": arms["baseline"]["rate"],
            "random_rate": arms["random"]["rate"], "best_verdict": cmp["verdicts"][best]["verdict"],
            "random_not_lower_than_baseline_ci": arms["random"]["ci_high"] >= arms["baseline"]["ci_low"]},
        "jobs_trained": pdoc["trained"], "jobs_reused": pdoc["reused"], "seconds": pdoc["seconds"],
    }
