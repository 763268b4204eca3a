"""What verify, leave-one-out and LDS share: the retraining context of a run, method scores,
Ray settings from the command line, and machine facts for the reports."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from datablame.config import RayConfig, RunConfig
from datablame.data.corpus import Corpus, Query
from datablame.errors import DatablameError
from datablame.layout import RunLayout
from datablame.verify.retrain import RetrainContext, behaviour_members

log = logging.getLogger("datablame")


def base_model_dir(run_dir: Path) -> str | None:
    base = RunLayout(run_dir).base_model
    return str(base) if base.is_dir() else None


def retrain_context(
    cfg: RunConfig,
    run_dir: Path,
    corpus: Corpus,
    queries: Sequence[Query],
    *,
    generate: bool,
    max_new_tokens: int | None = None,
    epochs: float | None = None,
    flip_text: str = "CORRUPTED DATA - IGNORE THIS",
) -> RetrainContext:
    from datablame.runs import check_model_data

    # the run's initial weights (a tiny model's tokenizer is built from the rows) and its model
    # must come from this data; the job keys hash the corpus fingerprint as well (RetrainContext)
    check_model_data(cfg, run_dir, corpus.fingerprint())
    base = base_model_dir(run_dir)
    if base is None and cfg.model.kind == "tiny":
        raise DatablameError(
            f"no initial model in {RunLayout(run_dir).base_model}: retraining needs the weights "
            "the run started from",
            "run `datablame train --config ...` (or `datablame run`) first",
        )
    missing = [q.query_id for q in queries if q.completion is None]
    if missing:
        raise DatablameError(f"queries {missing} have no completion to measure", "attribute first")
    return RetrainContext(
        config=cfg.model_dump(mode="json"),
        run_dir=str(run_dir),
        base_model=base,
        corpus_fingerprint=corpus.fingerprint(),
        n_rows=len(corpus),
        queries=tuple((q.query_id, q.prompt, q.completion or "") for q in queries),
        members=behaviour_members(queries),
        generate=generate,
        max_new_tokens=max_new_tokens or cfg.attribution.max_new_tokens,
        epochs=epochs,
        flip_text=flip_text,
    )


def ray_settings(
    base: RayConfig, *, num_cpus: int | None = None, address: str | None = None, serial: bool = False
) -> RayConfig:
    """The config's Ray section with command-line overrides applied."""
    update: dict[str, Any] = {}
    if num_cpus is not None:
        update["num_cpus"] = num_cpus
    if address is not None:
        update["address"] = address
    if serial:
        update["runner"] = "serial"
    return with_flags(base, update, {"num_cpus": "--num-cpus", "address": "--address", "runner": "--serial"})


def with_flags(section: BaseModel, overrides: dict[str, Any], flags: dict[str, str]) -> Any:
    """`section` with command-line `overrides` applied and validated by its own model, so a
    flag gets the same range checks as the config key; a bad value names the flag."""
    if not overrides:
        return section
    try:
        return type(section).model_validate({**section.model_dump(), **overrides})
    except ValidationError as err:
        e = err.errors()[0]
        field = str(e.get("loc", ("?",))[0])
        flag = flags.get(field, f"--{field.replace('_', '-')}")
        value = overrides.get(field, e.get("input"))
        raise DatablameError(f"{flag} {value!r}: {e.get('msg', 'invalid value').removeprefix('Value error, ')}",
                             f"pass a valid {flag} (the same rule as the config's {field})") from None


def check_methods(cfg: RunConfig, methods: Sequence[str]) -> None:
    """Fail on an unknown method or bad option before anything is trained."""
    from datablame.methods import get_method

    for name in methods:
        get_method(name, **cfg.attribution.options.get(name, {}))


def method_scores(
    cfg: RunConfig, inputs, methods: Sequence[str], *, extra_options: dict[str, dict] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, dict], dict[str, str]]:
    """Scores [Q, R] of each method on `inputs`, their descriptions, and per-method errors
    (a method that fails is reported, not fatal: the others still get their numbers)."""
    from datablame.methods import run_method

    scores, described, errors = {}, {}, {}
    for name in methods:
        opts = {**cfg.attribution.options.get(name, {}), **(extra_options or {}).get(name, {})}
        try:
            run = run_method(inputs, name, opts)
            described[name] = {**run.method.describe(), "seconds": run.seconds}
        except DatablameError as err:
            errors[name] = f"{err.problem} ({err.fix})" if err.fix else err.problem
            continue
        except Exception as err:  # a bug in one method must not cost the others their numbers
            log.error("method %s failed: %s: %s (the command exits non-zero at the end)", name, type(err).__name__, err)
            log.debug("method %s failed", name, exc_info=True)
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        scores[name] = run.scores
    return scores, described, errors


def raise_if_methods_failed(errors: dict[str, str], written: dict[str, Path] | None = None) -> None:
    """After the other methods' numbers are written: a failed method fails the command."""
    if not errors:
        return
    names = ", ".join(sorted(errors))
    detail = "; ".join(f"{m}: {e}" for m, e in sorted(errors.items()))
    where = f" (the other methods' results are in {', '.join(str(p) for p in written.values())})" if written else ""
    raise DatablameError(f"method(s) {names} failed: {detail}{where}",
                         "fix or drop the failed method(s) (--methods) and rerun")


def machine_facts() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
