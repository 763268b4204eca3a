"""`datablame diff --stage patch` and the closing report (api layer, split from api_diff).

`patch_stage` removes each blaming method's top K rows from the fine-tuning set (the run's
`data:` corpus), LoRA-fine-tunes the after-model on the rest with `diff.patch` settings, and
scans every patched model at one alpha; the controls are the same fine-tune on every row and on
every row minus K random rows (`datablame.diff.patching`). Finished (arm, seed) jobs are kept
under `<diff out>/patch/jobs/` and skipped by a rerun. It writes patching.json,
patching_comparison.csv/.png; `final_report` writes final_results.json/.png and case_study.md.

`demo_patch` is the same on the offline demo (`datablame diff --demo`), with settings sized for
two CPU cores.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from datablame.config import RunConfig
from datablame.config_diff import DiffPatchSettings
from datablame.data.corpus import Corpus
from datablame.errors import DatablameError
from datablame.layout import DiffLayout

log = logging.getLogger("datablame")

BLAME_FILE = "blame.json"
# the demo's patch: all of the tiny Llama's linear layers, a high lr, 100 steps (a few s each);
# K = 8 (the 4 planted rows rank 1-4 for every method; the demo corpus has 58 rows)
DEMO_PATCH = {"top_k": 8, "seeds": 3, "steps": 100, "r": 8, "lora_alpha": 16, "learning_rate": 1e-2, "batch_size": 8,
              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def read_json(path: Path, missing_fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise DatablameError(f"{path} is missing", missing_fix)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DatablameError(f"{path} is unreadable ({err.__class__.__name__})", missing_fix) from None


def check_patch(cfg: RunConfig, corpus: Corpus, out: Path) -> dict[str, Any]:
    """Everything the patch stage needs that can be checked without a model: blame.json, K
    against the corpus and the pool; returns the blame document."""
    from datablame.diff.patching import method_removals

    blame = read_json(out / BLAME_FILE, "run `datablame diff --stage attribute` first")
    method_removals(blame, corpus, cfg.diff.patch)
    return blame


def run_patch(*, out: Path, corpus: Corpus, blame: dict[str, Any], scan: dict[str, Any], settings: DiffPatchSettings,
              scan_settings: dict[str, Any], prompts: list, before: Any, after: Any, model_cfg: Any,
              progress: bool = True) -> dict[str, Any]:
    """Plan, run (resumably) and compare the patch jobs; write patching.json/.csv/.png.
    `before`/`after`: LoadedModel of the before- and after-model (the after-model is copied,
    never changed); `scan_settings`: the scan's settings (alphas and n_samples are replaced)."""
    from datablame.diff.classify import make_classifier
    from datablame.diff.patching import (
        PatchRunner,
        choose_alpha,
        method_removals,
        patch_document,
        plan_jobs,
        run_patch_jobs,
        write_comparison,
    )
    from datablame.diff.scan import ScanSettings

    removals = method_removals(blame, corpus, settings)
    jobs = plan_jobs(corpus, removals, settings)
    alpha = choose_alpha(scan, settings.alpha)
    n_samples = settings.n_samples or int(scan_settings["n_samples"])
    ss = ScanSettings.model_validate({**scan_settings, "alphas": [alpha], "n_samples": n_samples})
    layout = DiffLayout(out)
    pristine = after.model.eval()

    def load_after() -> tuple[Any, Any]:
        return copy.deepcopy(pristine), after.tokenizer

    runner = PatchRunner(corpus=corpus, load_after=load_after, before=before.model.eval(), model_cfg=model_cfg,
                         prompts=prompts, scan=ss, settings=settings, layout=layout,
                         before_source=f"{before.source} @{before.fingerprint[:16]}",
                         after_source=f"{after.source} @{after.fingerprint[:16]}",
                         classifier=make_classifier(ss.classifier))
    log.info("patch: %d arms x %d seeds at alpha %g, %d samples per prompt", len(removals) + 2, settings.seeds,
             alpha, n_samples)
    ran = run_patch_jobs(runner, jobs, progress=progress)
    doc = patch_document(ran["records"], removals, blame, corpus, scan, settings, alpha, n_samples,
                         trained=ran["trained"], reused=ran["reused"], seconds=ran["seconds"])
    doc["files"] = {k: str(v) for k, v in write_comparison(layout, doc).items()}
    return doc


def patch_stage(cfg: RunConfig, corpus: Corpus, out: Path, before: str, after: str | None,
                adapter: str | None) -> dict[str, Any]:
    """The config-driven patch stage (see the module doc); returns a short summary."""
    from datablame.api_diff import _after_model, _prompts, _read_scan, _scan_settings
    from datablame.diff.pair import _load_one

    blame = check_patch(cfg, corpus, out)
    scan = _read_scan(out)
    prompts = _prompts(cfg)
    device = cfg.diff.device or cfg.model.device
    b = _load_one(before, device=device, dtype=cfg.diff.dtype)
    a = _after_model(cfg, before, after, adapter)
    doc = run_patch(out=out, corpus=corpus, blame=blame, scan=scan, settings=cfg.diff.patch,
                    scan_settings=_scan_settings(cfg), prompts=prompts, before=b, after=a, model_cfg=cfg.model)
    return patch_summary(doc)


def patch_summary(doc: dict[str, Any]) -> dict[str, Any]:
    cmp = doc["comparison"]
    return {"alpha": doc["alpha"], "top_k": doc["top_k"], "seeds": doc["seeds"], "trained": doc["trained"],
            "reused": doc["reused"],
            "arms": [{k: a[k] for k in ("arm", "hits", "n", "rate", "ci_low", "ci_high")} for a in cmp["arms"]],
            "verdicts": {m: v["verdict"] for m, v in cmp["verdicts"].items()}, "files": doc["files"]}


def final_report(out: Path) -> dict[str, str]:
    """final_results.json/.png and case_study.md from whatever stages have run in `out`."""
    from datablame.api_diff import _read_scan
    from datablame.diff.final import write_final

    layout = DiffLayout(out)
    scan = _read_scan(out)
    blame_path, patch_path = out / BLAME_FILE, layout.patch_json
    blame = json.loads(blame_path.read_text(encoding="utf-8")) if blame_path.is_file() else None
    patch = json.loads(patch_path.read_text(encoding="utf-8")) if patch_path.is_file() else None
    return write_final(layout, scan, blame, patch)


def demo_patch(demo: Any, pair: Any, blame: dict[str, Any], scan: dict[str, Any], scan_settings: Any, out: Path, *,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The patch stage on the offline demo (DEMO_PATCH settings, `overrides` on top), then the
    final report; returns the patch document with its files."""
    from datablame.diff.final import write_final
    from datablame.diff.scan import load_prompts
    from datablame.models.loading import LoadedModel, load_model, model_fingerprint

    settings = DiffPatchSettings.model_validate({**DEMO_PATCH, **(overrides or {})})
    after = load_model(demo.model_cfg, path_override=str(demo.after_dir))
    before = LoadedModel(pair.before, pair.tokenizer, pair.before_source, model_fingerprint(pair.before))
    doc = run_patch(out=out, corpus=demo.corpus, blame=blame, scan=scan, settings=settings,
                    scan_settings=scan_settings.model_dump(mode="json"), prompts=load_prompts(demo.prompts_file),
                    before=before, after=after, model_cfg=demo.model_cfg, progress=False)
    doc["files"].update(write_final(DiffLayout(out), scan, blame, doc))
    return doc
