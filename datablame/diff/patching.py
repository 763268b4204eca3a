"""Patching against controls: does removing a method's blamed rows make the behaviour rarer?

For each blaming method, its top K rows are dropped from the fine-tuning set and the
after-model is LoRA-fine-tuned on what is left for a fixed number of steps (the seed's
"patch"). Which K rows: the top K of the method's blame over *all* surfaced queries (a row's
mean percentile in each query's ranking of the BM25 pool, `BlameResult.blame`), i.e. the top K
of the mean rank -- not the union of per-query top lists, so every method removes exactly K.

Two controls get the same fine-tune: `baseline` on every row (no removal: what further
training alone does) and `random` on every row minus K random rows (what removing *some* K rows
does). The random rows are drawn, per training seed, among the rows that no compared method
removes (when at least K such rows exist; else among all rows, and the record says so), so the
control never removes a blamed row by chance. Every arm is trained with `seeds` training seeds
(data order and LoRA init); each patched model is then scanned at one alpha, against the same
before-model, with the same per-cell sampling seeds for every arm (common random numbers).

Jobs are resumable the way `datablame.verify.sweep` jobs are: each finished (arm, seed) job is
one JSON record under `DiffLayout.patch_jobs_dir`, named by a content hash of everything that
decides it (models, corpus, removed rows, seed, training and scan settings), so a rerun skips
finished arms; a trained LoRA model whose scan did not finish is reused (its own `train_summary`
marker), and an interrupted scan resumes its cells.

The comparison (`compare_arms`) pools each arm's samples over seeds: rate = hits / n with a
Wilson 95 % interval, plus the per-seed rates. A method is "better than both controls" only
when its pooled rate is lower than each control's *and* the Newcombe (hybrid Wilson score, his
method 10) 95 % interval of the difference rate(method) - rate(control) lies below 0 for both.
That interval treats the pooled samples as independent draws; it does not model seed-to-seed
spread (the per-seed rates are reported so it can be seen, and `seeds_lower` counts the training
seeds at which the method's rate is below the control's at the same seed).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datablame.config import LoraConfig, ModelConfig, TrainingConfig
from datablame.config_diff import DiffPatchSettings
from datablame.data.corpus import Corpus
from datablame.diff.classify import Classifier
from datablame.diff.rates import wilson_interval
from datablame.diff.sampling import ModelPair
from datablame.diff.scan import ScanPrompt, ScanSettings, run_scan
from datablame.errors import DatablameError
from datablame.layout import DiffLayout, ModelLayout
from datablame.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger("datablame")

FORMAT = 1
BASELINE, RANDOM = "baseline", "random"
CONTROLS = (BASELINE, RANDOM)
BETTER, NOT_BETTER = "better than both controls", "not better"
SELECTION = ("top K of the method's blame over all surfaced queries (mean percentile of the row in each "
             "query's ranking of the BM25 pool), the same K for every method")
CI_METHOD = ("Newcombe hybrid score interval (method 10, from the two Wilson 95 % intervals) of "
             "rate(method) - rate(control), samples pooled over seeds and prompts")


@dataclass(frozen=True)
class PatchJob:
    """One fine-tune + scan: an arm (a control or a method) at one training seed."""

    arm: str  # "baseline", "random" or the method's name
    kind: str  # "baseline", "random" or "method"
    seed: int
    removed: tuple[str, ...]  # row ids left out of the fine-tuning set
    note: str = ""


def _digest(obj: Any, n: int = 20) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:n]


# --- planning ------------------------------------------------------------------------------

def method_removals(blame: Mapping[str, Any], corpus: Corpus, settings: DiffPatchSettings) -> dict[str, list[str]]:
    """Per method, the row ids its patch removes (top K of its ranking in blame.json), after
    checking K against the fine-tuning set and the pool."""
    n = len(corpus)
    k = settings.top_k
    if k >= n:
        raise DatablameError(f"diff.patch.top_k ({k}) is not smaller than the fine-tuning set of {n} rows: "
                             "nothing would be left to train on", f"set diff.patch.top_k to at most {n - 1}")
    ranking = blame.get("ranking")
    if not isinstance(ranking, dict) or not ranking:
        raise DatablameError("blame.json has no full ranking of the pool (written by an older version)",
                             "rerun `datablame diff --stage attribute`")
    methods = list(settings.methods) if settings.methods else list(ranking)
    unknown = [m for m in methods if m not in ranking]
    if unknown:
        raise DatablameError(f"diff.patch.methods {unknown} were not run by the attribute stage "
                             f"(blame.json has {sorted(ranking)})",
                             "list methods of diff.methods there, or rerun the attribute stage with them")
    ids = {r.row_id for r in corpus}
    out = {}
    for m in methods:
        rows = [r["row_id"] for r in ranking[m]]
        if k > len(rows):
            raise DatablameError(f"diff.patch.top_k ({k}) is larger than the candidate pool of {len(rows)} rows "
                                 f"that {m} ranked", f"set diff.patch.top_k to at most {len(rows)}, or raise "
                                                     "diff.pool_size and rerun the attribute stage")
        missing = [r for r in rows[:k] if r not in ids]
        if missing:
            raise DatablameError(f"blame.json names rows that are not in the fine-tuning set (e.g. {missing[0]}): "
                                 "it was computed on another corpus", "rerun `datablame diff --stage attribute`")
        out[m] = rows[:k]
    return out


def random_removal(corpus: Corpus, k: int, avoid: set[str], seed: int, draw_seed: int = 0) -> tuple[list[str], str]:
    """K row ids drawn uniformly (seeded by `draw_seed`, `seed`) among the rows not in `avoid`,
    in corpus order, and where they were drawn from; all rows when fewer than K are outside `avoid`."""
    ids = [r.row_id for r in corpus]
    pool = [r for r in ids if r not in avoid]
    note = f"drawn among the {len(pool)} rows no method removes"
    if len(pool) < k:
        pool, note = ids, f"drawn among all {len(ids)} rows (only {len(pool)} rows are outside every method's removal)"
    rng = np.random.default_rng([draw_seed, seed])
    pick = set(rng.choice(len(pool), size=k, replace=False).tolist())
    chosen = {pool[i] for i in pick}
    return [r for r in ids if r in chosen], note


def plan_jobs(corpus: Corpus, removals: Mapping[str, Sequence[str]], settings: DiffPatchSettings) -> list[PatchJob]:
    """Every (arm, seed) job: the two controls and one arm per method, `settings.seeds` seeds each."""
    if not removals:
        raise DatablameError("no method to patch with", "run the attribute stage with at least one method")
    avoid = {r for rows in removals.values() for r in rows}
    jobs = []
    for seed in range(settings.seeds):
        jobs.append(PatchJob(BASELINE, BASELINE, seed, ()))
        rnd, note = random_removal(corpus, settings.top_k, avoid, seed, settings.random_seed)
        jobs.append(PatchJob(RANDOM, RANDOM, seed, tuple(rnd), note))
        for m, rows in removals.items():
            if m in CONTROLS:
                raise DatablameError(f"a method may not be called {m!r} (a control's name)", "rename the method")
            jobs.append(PatchJob(m, "method", seed, tuple(rows)))
    return jobs


def train_config(settings: DiffPatchSettings, seed: int) -> TrainingConfig:
    """The fixed LoRA fine-tune every arm gets (constant lr, `steps` steps, no checkpoints)."""
    return TrainingConfig(
        method="lora", lora=LoraConfig(r=settings.r, alpha=settings.lora_alpha, dropout=0.0,
                                       target_modules=list(settings.target_modules)),
        num_train_epochs=1.0, max_steps=settings.steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, lr_scheduler_type="constant", weight_decay=0.0, warmup_ratio=0.0,
        save_steps=10**9, logging_steps=settings.steps, seed=seed, resume=False, report_to=[])


# --- running ---------------------------------------------------------------------------------

@dataclass
class PatchRunner:
    """What every job shares: how to load the after-model, the before-model to amplify
    against, the corpus, the prompts and the scan settings (one alpha)."""

    corpus: Corpus
    load_after: Callable[[], tuple[Any, Any]]  # -> (fresh after-model, tokenizer)
    before: Any  # the before-model (eval mode), the same for every arm
    model_cfg: ModelConfig  # max_length / loss_on of the fine-tuning rows
    prompts: Sequence[ScanPrompt]
    scan: ScanSettings  # alphas = [the patch alpha]
    settings: DiffPatchSettings
    layout: DiffLayout
    before_source: str
    after_source: str
    classifier: Classifier | None = None

    def identity(self) -> dict[str, Any]:
        train = self.settings.model_dump(include={"steps", "r", "lora_alpha", "target_modules", "learning_rate",
                                                  "batch_size"})
        return {"format": FORMAT, "after": self.after_source, "corpus": self.corpus.fingerprint(), "train": train,
                "max_length": self.model_cfg.max_length, "loss_on": self.model_cfg.loss_on}

    def train_key(self, job: PatchJob) -> str:
        return _digest({"id": self.identity(), "seed": job.seed, "removed": sorted(job.removed)})

    def job_key(self, job: PatchJob) -> str:
        scan = {"before": self.before_source, "scan": self.scan.model_dump(mode="json"),
                "prompts": [[p.prompt_id, p.prompt] for p in self.prompts]}
        return _digest({"train": self.train_key(job), "scan": scan})


def load_record(layout: DiffLayout, key: str) -> dict[str, Any] | None:
    path = layout.patch_jobs_dir / f"{key}.json"
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # written atomically: foreign damage, run it again
    return rec if rec.get("key") == key and "pooled" in rec else None


def _finetune(runner: PatchRunner, job: PatchJob, key: str) -> tuple[Any, Any, dict[str, Any]]:
    """The patched after-model (LoRA merged), its tokenizer and its training summary; a finished training
    of the same key is loaded instead of trained again."""
    from datablame.train import finetune
    from datablame.utils.io import seed_everything

    out = ModelLayout(runner.layout.patch_model_dir(key))
    model, tok = runner.load_after()
    if hasattr(model, "peft_config"):  # an after-model given as base + adapter: patch the merged model
        model = model.merge_and_unload()
    summary = None
    if out.train_summary.is_file() and out.final.is_dir():
        try:
            summary = json.loads(out.train_summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = None
    if summary is not None and summary.get("train_key") == key:
        from peft import PeftModel

        patched = PeftModel.from_pretrained(model, str(out.final)).merge_and_unload()
        return patched.eval(), tok, {**summary, "reused": True}
    removed = set(job.removed)
    kept = Corpus([r for r in runner.corpus if r.row_id not in removed], name=f"{runner.corpus.name}[patch]")
    seed_everything(job.seed)
    res = finetune(model, tok, kept, train_config(runner.settings, job.seed), runner.model_cfg, out.root,
                   show_progress=False)
    dropped = set(res.dropped_no_loss)
    losses = [h["loss"] for h in res.log_history if "loss" in h]
    summary = {"train_key": key, "trained_row_ids": [r.row_id for r in kept if r.row_id not in dropped],
               "dropped_no_loss": sorted(dropped), "steps": runner.settings.steps, "train_seconds": res.seconds,
               "final_loss": losses[-1] if losses else None}
    atomic_write_json(out.train_summary, summary)
    return res.model.merge_and_unload().eval(), tok, {**summary, "reused": False}


def run_job(runner: PatchRunner, job: PatchJob) -> dict[str, Any]:
    """Fine-tune, scan and record one job (`<patch_jobs_dir>/<key>.json`); returns the record."""
    t0 = time.perf_counter()
    key, tkey = runner.job_key(job), runner.train_key(job)
    patched, tok, summary = _finetune(runner, job, tkey)
    pair = ModelPair(runner.before, patched, tok, before_source=runner.before_source, after_source=f"{runner.after_source} + LoRA patch {tkey}")
    t = time.perf_counter()
    scan_dir = runner.layout.patch_scan_dir(key)
    doc = run_scan(pair, runner.prompts, runner.scan, scan_dir, classifier=runner.classifier)
    n_rows = len(runner.corpus)
    rec = {
        "key": key, "train_key": tkey, "arm": job.arm, "kind": job.kind, "seed": job.seed,
        "removed": list(job.removed), "n_removed": len(job.removed), "n_rows": n_rows, "note": job.note,
        "trained_row_ids": summary["trained_row_ids"], "rows_trained": len(summary["trained_row_ids"]),
        "final_loss": summary.get("final_loss"), "train_reused": summary["reused"],
        "alpha": runner.scan.alphas[0], "n_samples": runner.scan.n_samples,
        "pooled": doc["pooled"][0], "per_prompt": [{k: c[k] for k in ("prompt_id", "hits", "n", "rate")}
                                                  for c in doc["cells"]],
        "scan_file": str(scan_dir), "train_seconds": summary.get("train_seconds"),
        "scan_seconds": time.perf_counter() - t, "seconds": time.perf_counter() - t0,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(runner.layout.patch_jobs_dir / f"{key}.json", rec)
    if not runner.settings.keep_models:
        shutil.rmtree(runner.layout.patch_model_dir(tkey), ignore_errors=True)
    return rec


def run_patch_jobs(runner: PatchRunner, jobs: Sequence[PatchJob], *, progress: bool = True) -> dict[str, Any]:
    """Run every job not finished on disk (serially, in this process); returns
    {"records": [one per job, in order], "trained": n, "reused": n, "seconds": s}."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    keys = [runner.job_key(j) for j in jobs]
    records: dict[str, dict[str, Any]] = {}
    for k in keys:
        rec = load_record(runner.layout, k)
        if rec is not None:
            records[k] = rec
    reused = len(records)
    todo = [(k, j) for k, j in zip(keys, jobs, strict=True) if k not in records]
    if todo:
        log.info("patch: %d fine-tunes to run, %d already done (%s)", len(todo), reused, runner.layout.patch_jobs_dir)
    bar = tqdm(total=len(todo), desc="patch fine-tunes", disable=not progress or not todo, unit="model")
    try:
        for k, j in todo:
            if k not in records:  # two equal jobs (same rows, same seed) run once
                records[k] = run_job(runner, j)
            bar.update(1)
    finally:
        bar.close()
    # two arms with the same rows and seed (two methods removing the same K rows) share one job:
    # its record is reported under each arm's own name
    out = [{**records[k], "arm": j.arm, "kind": j.kind, "note": j.note} for k, j in zip(keys, jobs, strict=True)]
    return {"records": out, "trained": len({k for k, _ in todo}), "reused": reused,
            "seconds": time.perf_counter() - t0}


# --- comparing ---------------------------------------------------------------------------------

def newcombe_interval(h1: int, n1: int, h2: int, n2: int) -> tuple[float, float, float]:
    """(d, low, high): d = h1/n1 - h2/n2 and its Newcombe hybrid score 95 % interval (method 10,
    built from the two Wilson intervals); (nan, -1, 1) when either n is 0."""
    if n1 == 0 or n2 == 0:
        return float("nan"), -1.0, 1.0
    p1, p2 = h1 / n1, h2 / n2
    l1, u1 = wilson_interval(h1, n1)
    l2, u2 = wilson_interval(h2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def verdict(method: tuple[int, int], baseline: tuple[int, int], random: tuple[int, int]) -> dict[str, Any]:
    """A method's (hits, n) against both controls': "better than both controls" only when its
    rate is lower than each control's and each difference's Newcombe 95 % interval excludes 0."""
    vs = {}
    for name, (h, n) in ((BASELINE, baseline), (RANDOM, random)):
        d, lo, hi = newcombe_interval(method[0], method[1], h, n)
        vs[name] = {"diff": d, "ci_low": lo, "ci_high": hi, "lower": bool(d < 0), "ci_excludes_0": bool(hi < 0 or lo > 0)}
    better = all(v["lower"] and v["ci_high"] < 0 for v in vs.values())
    why = "; ".join(f"vs {c}: {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" for c, v in vs.items())
    return {"verdict": BETTER if better else NOT_BETTER, "vs": vs, "why": why}


def compare_arms(records: Sequence[Mapping[str, Any]], *, before: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pool each arm's job records over seeds (rate, Wilson interval, per-seed rates) and judge
    every method against both controls; both controls must be there. `before`: the unpatched
    after-model's pooled rate at the same alpha (the scan's), shown for reference."""
    arms: dict[str, dict[str, Any]] = {}
    for r in records:
        a = arms.setdefault(r["arm"], {"arm": r["arm"], "kind": r["kind"], "hits": 0, "n": 0, "seeds": [],
                                       "n_removed": r["n_removed"]})
        a["hits"] += r["pooled"]["hits"]
        a["n"] += r["pooled"]["n"]
        a["seeds"].append({"seed": r["seed"], "hits": r["pooled"]["hits"], "n": r["pooled"]["n"],
                           "rate": r["pooled"]["rate"], "removed": r["removed"], "final_loss": r.get("final_loss")})
    missing = [c for c in CONTROLS if c not in arms]
    if missing:
        raise DatablameError(f"the patch comparison lacks its control arm(s) {missing}",
                             "rerun `datablame diff --stage patch`: every comparison trains both controls")
    for a in arms.values():
        a["rate"] = a["hits"] / a["n"] if a["n"] else None
        a["ci_low"], a["ci_high"] = wilson_interval(a["hits"], a["n"])
        a["seeds"].sort(key=lambda s: s["seed"])
    b, rnd = arms[BASELINE], arms[RANDOM]
    verdicts = {name: {"rate": a["rate"], **verdict((a["hits"], a["n"]), (b["hits"], b["n"]), (rnd["hits"], rnd["n"]))}
                for name, a in arms.items() if a["kind"] == "method"}
    for name, v in verdicts.items():  # seed by seed (same training seed), for reading the spread; not in the rule
        for c in CONTROLS:
            mine = {s["seed"]: s["rate"] for s in arms[name]["seeds"]}
            pairs = [(mine[s["seed"]], s["rate"]) for s in arms[c]["seeds"]
                     if s["seed"] in mine and s["rate"] is not None and mine[s["seed"]] is not None]
            v["vs"][c]["seeds_lower"] = f"{sum(m < r for m, r in pairs)}/{len(pairs)}"
    if not verdicts:
        raise DatablameError("the patch comparison has no method arm", "run the attribute stage with a method")
    order = [BASELINE, RANDOM] + sorted(verdicts, key=lambda m: (verdicts[m]["rate"] is None, verdicts[m]["rate"]))
    return {"arms": [arms[a] for a in order], "verdicts": verdicts, "before": dict(before) if before else None,
            "rate_unit": "fraction of samples showing the behaviour, pooled over seeds and prompts; Wilson 95 %",
            "ci_method": CI_METHOD, "selection": SELECTION}


def comparison_csv(cmp: Mapping[str, Any]) -> str:
    """One line per arm (seed "all": pooled) and per (arm, seed), with the verdict columns."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arm", "kind", "seed", "n_removed", "hits", "n", "rate", "ci_low", "ci_high", "diff_vs_baseline",
                "diff_vs_baseline_ci_low", "diff_vs_baseline_ci_high", "diff_vs_random", "diff_vs_random_ci_low",
                "diff_vs_random_ci_high", "verdict"])
    for a in cmp["arms"]:
        v = cmp["verdicts"].get(a["arm"])
        extra = [] if v is None else [x for c in CONTROLS for x in (v["vs"][c]["diff"], v["vs"][c]["ci_low"],
                                                                   v["vs"][c]["ci_high"])] + [v["verdict"]]
        extra = extra or [""] * 6 + ["control"]
        w.writerow([a["arm"], a["kind"], "all", a["n_removed"], a["hits"], a["n"], a["rate"], a["ci_low"],
                    a["ci_high"], *extra])
        for s in a["seeds"]:
            lo, hi = wilson_interval(s["hits"], s["n"])
            w.writerow([a["arm"], a["kind"], s["seed"], len(s["removed"]), s["hits"], s["n"], s["rate"], lo, hi,
                        *[""] * 7])
    return buf.getvalue()


def draw_patching(ax: Any, cmp: Mapping[str, Any]) -> None:
    """Bars: each arm's pooled rate with its Wilson interval; dots: per-seed rates; dashed line:
    the unpatched after-model at the same alpha; the verdict under each method."""
    arms = cmp["arms"]
    xs = np.arange(len(arms))
    colors = ["#9e9e9e" if a["kind"] != "method" else
              ("#2e7d32" if cmp["verdicts"][a["arm"]]["verdict"] == BETTER else "#c62828") for a in arms]
    rates = [a["rate"] or 0.0 for a in arms]
    err = [[r - a["ci_low"] for r, a in zip(rates, arms, strict=True)],
           [a["ci_high"] - r for r, a in zip(rates, arms, strict=True)]]
    ax.bar(xs, rates, color=colors, alpha=0.8, yerr=err, capsize=4)
    for x, a in zip(xs, arms, strict=True):
        sr = [s["rate"] for s in a["seeds"] if s["rate"] is not None]
        ax.scatter(np.full(len(sr), x) + np.linspace(-0.15, 0.15, len(sr)) if len(sr) > 1 else [x] * len(sr), sr,
                   color="k", s=12, zorder=3)
    before = cmp.get("before")
    if before and before.get("rate") is not None:
        ax.axhline(before["rate"], color="k", ls="--", lw=1, label=f"unpatched after-model ({before['rate']:.2f})")
        ax.legend(fontsize=7, loc="upper right")
    labels = []
    for a in arms:
        v = cmp["verdicts"].get(a["arm"])
        tag = f"\n-{a['n_removed']} rows" if a["n_removed"] else "\nall rows"
        labels.append(a["arm"] + tag + ("" if v is None else ("\nbetter" if v["verdict"] == BETTER else "\nnot better")))
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_ylabel("behaviour rate after patching")
    ax.set_ylim(0, 1.05)


def plot_patching(cmp: Mapping[str, Any], path: str | Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(cmp["arms"]) + 2), 4.2), constrained_layout=True)
    draw_patching(ax, cmp)
    alpha = cmp.get("alpha")
    ax.set_title(title or f"Patching against controls (alpha {alpha:g}; bars: pooled over seeds, Wilson 95 %; "
                          "dots: seeds)" if alpha is not None else "Patching against controls", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_comparison(layout: DiffLayout, doc: Mapping[str, Any]) -> dict[str, Path]:
    """patching.json, patching_comparison.csv and .png of a patch document."""
    atomic_write_json(layout.patch_json, dict(doc))
    atomic_write_text(layout.patching_csv, comparison_csv(doc["comparison"]))
    plot_patching({**doc["comparison"], "alpha": doc["alpha"]}, layout.patching_png)
    return {"patching_json": layout.patch_json, "patching_csv": layout.patching_csv, "patching_png": layout.patching_png}


def choose_alpha(scan: Mapping[str, Any], requested: float | None) -> float:
    """`requested`, else the scan's alpha with the highest pooled rate (the lowest such alpha on ties)."""
    if requested is not None:
        return float(requested)
    pooled = [p for p in scan.get("pooled", []) if p.get("rate") is not None]
    if not pooled:
        raise DatablameError("the scan has no rates to choose the patch alpha from",
                             "finish the scan, or set diff.patch.alpha")
    best = max(p["rate"] for p in pooled)
    return float(min(p["alpha"] for p in pooled if p["rate"] == best))


def patch_document(records: Sequence[Mapping[str, Any]], removals: Mapping[str, Sequence[str]],
                   blame: Mapping[str, Any], corpus: Corpus, scan: Mapping[str, Any], settings: DiffPatchSettings,
                   alpha: float, n_samples: int, *, trained: int = 0, reused: int = 0,
                   seconds: float = 0.0) -> dict[str, Any]:
    """The patch stage's document (patching.json): settings, removals with their blame, the
    comparison, per-prompt hits per arm, the texts of the rows the case study shows, and one
    short line per job."""
    before = next((p for p in scan.get("pooled", []) if p["alpha"] == alpha), None)
    cmp = compare_arms(records, before=before)
    blame_of = {m: {r["row_id"]: r["blame"] for r in blame["ranking"][m]} for m in removals}
    per_prompt: dict[str, dict[str, list[int]]] = {}
    for r in records:
        for c in r["per_prompt"]:
            acc = per_prompt.setdefault(r["arm"], {}).setdefault(c["prompt_id"], [0, 0])
            acc[0] += c["hits"]
            acc[1] += c["n"]
    shown = {rid for rows in removals.values() for rid in rows}
    for per_query in blame.get("top_k_per_query", {}).values():
        shown |= set(per_query[0] if per_query else [])
    by_id = {r.row_id: r for r in corpus}
    random_notes = sorted({r["note"] for r in records if r["kind"] == RANDOM and r.get("note")})
    return {
        "format": FORMAT, "alpha": alpha, "n_samples": n_samples, "top_k": settings.top_k, "seeds": settings.seeds,
        "steps": settings.steps, "r": settings.r, "settings": settings.model_dump(mode="json"),
        "selection": SELECTION, "random_control": random_notes, "corpus_rows": len(corpus),
        "removals": {m: [{"row_id": rid, "blame": blame_of[m].get(rid)} for rid in rows] for m, rows in removals.items()},
        "comparison": cmp, "per_prompt": per_prompt,
        "row_texts": {rid: [by_id[rid].prompt, by_id[rid].completion] for rid in sorted(shown) if rid in by_id},
        "jobs": [{k: r.get(k) for k in ("key", "arm", "seed", "n_removed", "rows_trained", "final_loss", "seconds",
                                        "train_reused")} | {"hits": r["pooled"]["hits"], "n": r["pooled"]["n"]}
                 for r in records],
        "trained": trained, "reused": reused, "seconds": seconds,
    }
