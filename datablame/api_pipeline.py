"""The seed-000 study as one command: train -> factors -> scores -> inspect -> evaluate.

`datablame pipeline --config run.yaml` runs the stages in order, each through the same API as its
own command (`train`, curvature fitting, `attribute`, `inspect`, `evaluate --type all`), and
records each finished stage in `<run>/pipeline.json` with the hash of the config it ran with. A
rerun skips the stages already done with the same config (each stage also reuses its own caches:
training resumes from its last checkpoint, factors are reloaded when their identity matches), so
an interrupted pipeline picks up at the first unfinished stage; `force` reruns them all, `stages`
picks a subset. Part of the api layer (the CLI calls it like `datablame.api`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from datablame import api
from datablame.config import RunConfig
from datablame.errors import DatablameError
from datablame.evaluate.stage_tracking import track_stage
from datablame.evaluate.tracking import check_tracker
from datablame.layout import RunLayout
from datablame.utils.io import atomic_write_json
from datablame.utils.safe_load import read_json

log = logging.getLogger("datablame")

STAGES = ("train", "factors", "scores", "inspect", "evaluate")
FACTOR_KIND = "ekfac"


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(cfg.to_yaml().encode()).hexdigest()[:16]


def fit_factors(cfg: RunConfig, kind: str = FACTOR_KIND) -> dict[str, Any]:
    """Fit (or reload) the run's `kind` curvature factors in its projected gradient space and
    save them under `<run>/attribution/curvature/`, where `attribute` and `inspect` reuse them."""
    from datablame.features.preconditioner import fit_preconditioner
    from datablame.methods import get_method

    method_name = api.INSPECT_KINDS[kind]
    method = get_method(method_name, cfg.attribution.options.get(method_name, {}))
    inputs, _ = api.prepare_inputs(cfg, queries=False, use_store=False)
    t = time.perf_counter()
    pre = fit_preconditioner(inputs, kind, fisher=method.fisher, fit_rows=method.fit_rows, seed=method.seed,
                             reuse=method.reuse)
    path = RunLayout(inputs.run_dir).factor_path(kind)
    return {"kind": kind, "factors": str(path), "modules": len(pre.shapes) if hasattr(pre, "shapes") else None,
            "seconds": time.perf_counter() - t}


def _first_module(cfg: RunConfig) -> str:
    from datablame.features.gradients import featurizer_for

    inputs, _ = api.prepare_inputs(cfg, queries=False, use_store=False)
    return featurizer_for(inputs).shapes[0][0]


def _stage_params(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """The settings a stage ran with, as the tracker records them."""
    if stage == "train":
        return {"model": cfg.model.model_dump(mode="json"), "training": cfg.training.model_dump(mode="json")}
    if stage == "factors":
        return {"kind": FACTOR_KIND, "projection": cfg.attribution.projection.model_dump(mode="json")}
    if stage == "scores":
        return {"methods": cfg.attribution.method_names(), "top_k": cfg.attribution.top_k}
    return {}


def _evaluate_stage(cfg: RunConfig) -> dict[str, Any]:
    ev = cfg.evaluate
    if not ev.prompts_file and not ev.mmlu.path:
        log.warning("pipeline: evaluate skipped: set evaluate.prompts_file (prompts with reference answers) "
                    "and/or evaluate.mmlu.path (MMLU-format questions) to compare the base and fine-tuned models")
        return {"skipped": "no evaluate.prompts_file or evaluate.mmlu.path"}
    result = api.evaluate(cfg, types="all")
    return {"types": result.get("types"), "skipped": result.get("skipped"),
            "out": str(RunLayout(cfg.output.dir).evaluate_dir)}


def pipeline(cfg: RunConfig, *, stages: Sequence[str] | None = None, force: bool = False, layer: str | None = None
             ) -> dict[str, Any]:
    """Run the stages (default all, in order), skipping those `<run>/pipeline.json` records as
    done with this config (unless `force`). `layer`: the module `inspect` plots (default the
    first selected module). Returns the state written to pipeline.json."""
    wanted = list(stages or STAGES)
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise DatablameError(f"unknown pipeline stage(s) {unknown}", f"choose from {', '.join(STAGES)}")
    api.check_options(cfg)
    check_tracker(cfg.tracking)  # a missing tracker package fails now, not after training
    layout = RunLayout(cfg.output.dir)
    path = layout.pipeline_json
    key = config_hash(cfg)
    state = read_json(path, what="pipeline state", fix="delete it to rerun every stage") if path.is_file() else {}
    done = state.get("stages", {}) if state.get("config") == key else {}
    if state and state.get("config") != key:
        log.info("pipeline: the config changed since %s; every stage runs again (each reuses its own caches)", path)
    state = {"config": key, "stages": done}
    for stage in [s for s in STAGES if s in wanted]:
        if not force and done.get(stage, {}).get("ok"):
            log.info("pipeline: %s already done (%s); skipped", stage, done[stage].get("finished"))
            continue
        log.info("pipeline: %s ...", stage)
        t = time.perf_counter()
        if stage == "train":
            loaded = api.train(cfg)
            info: dict[str, Any] = {"model": loaded.source}
        elif stage == "factors":
            info = fit_factors(cfg)
        elif stage == "scores":
            _, paths = api.attribute(cfg)
            info = {"results": str(paths["json"])}
        elif stage == "inspect":
            paths = api.inspect(cfg, layer or _first_module(cfg), kind=FACTOR_KIND)
            info = {k: str(v) for k, v in paths.items()}
        else:
            info = _evaluate_stage(cfg)
        state["stages"][stage] = {"ok": True, "seconds": round(time.perf_counter() - t, 2),
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
        atomic_write_json(path, state)  # a stage that finished stays finished, whatever comes next
        if stage != "evaluate" and cfg.tracking.backend != "none":  # evaluate tracks itself
            state["stages"][stage]["tracking"] = track_stage(cfg.tracking, layout.root, stage, state["stages"][stage],
                                                             _stage_params(cfg, stage))
            atomic_write_json(path, state)
        log.info("pipeline: %s done in %.1f s", stage, state["stages"][stage]["seconds"])
    return state
