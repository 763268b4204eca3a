"""The behaviour scan: sample every prompt at every alpha, label each sample, measure rates.

For each prompt of a JSONL file and each alpha of the grid (default 0, 0.5, 1, 2, 4),
`n_samples` (default 50) amplified samples are drawn (`datablame.diff.sampling`), labelled by
the classifier (`datablame.diff.classify`) and summarised as a rate with its Wilson interval
(`datablame.diff.rates`). Written to `<out_dir>`:

- `phase_scan.json`: the settings, the models, and per (prompt, alpha) cell its seed, every
  sample (completion, label, reason) and its rate; rewritten atomically after each batch of
  cells, so an interrupted scan resumes where it stopped (finished cells are kept, never
  redrawn). A scan with other settings (sampling, samples, classifier, models) in the same
  folder is refused unless `overwrite=True`; a new prompt or alpha only adds cells.
- `behavior_rates.png`: rate vs alpha per prompt and pooled.

Each cell's seed is derived from (sampling.seed, prompt id, alpha), so its samples do not depend
on the other cells or on where a previous run stopped. Alpha 0 cells sample the after-model
alone (identical tokens to amplifying by 0, at half the cost).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datablame.diff.classify import Classifier, ClassifierSettings, make_classifier
from datablame.diff.rates import plot_rates, pooled_rates, rate_summary
from datablame.diff.sampling import ModelPair, SamplingSettings, check_alpha, sample_texts
from datablame.errors import DatablameError
from datablame.utils.io import atomic_write_json

log = logging.getLogger("datablame")

SCAN_FILE = "phase_scan.json"
PLOT_FILE = "behavior_rates.png"
FORMAT = 1
DEFAULT_ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0)


class ScanSettings(BaseModel):
    """The grid and sample size of a scan, how samples are decoded, and how they are labelled."""

    model_config = ConfigDict(extra="forbid")

    alphas: list[float] = Field(default_factory=lambda: list(DEFAULT_ALPHAS), description="amplification strengths")
    n_samples: int = Field(50, ge=1, description="samples per (prompt, alpha)")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one alpha")
        return sorted(dict.fromkeys(check_alpha(a) for a in v))


@dataclass(frozen=True)
class ScanPrompt:
    prompt_id: str
    prompt: str


def load_prompts(path: str | Path) -> list[ScanPrompt]:
    """Prompts of a JSONL file: one object per line with `prompt` and an optional `id`
    (default p<line number>); blank lines are skipped."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatablameError(f"cannot read the prompts file {p} ({err.__class__.__name__}: {err})",
                             "point the scan to a readable UTF-8 JSONL file, one {\"prompt\": ...} per line") from None
    out: list[ScanPrompt] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatablameError(f"{p} line {i} is not JSON ({err.msg})",
                                 'write one object per line, e.g. {"id": "q1", "prompt": "..."}') from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"]:
            raise DatablameError(f"{p} line {i} has no non-empty \"prompt\" string",
                                 'write one object per line, e.g. {"id": "q1", "prompt": "..."}')
        out.append(ScanPrompt(str(obj.get("id") or f"p{i}"), obj["prompt"]))
    if not out:
        raise DatablameError(f"{p} holds no prompts", 'add lines such as {"prompt": "..."}')
    dupes = sorted({x.prompt_id for x in out if sum(y.prompt_id == x.prompt_id for y in out) > 1})
    if dupes:
        raise DatablameError(f"{p}: prompt ids {dupes[:5]} appear more than once", "give every prompt its own id")
    return out


def cell_seed(seed: int, prompt_id: str, alpha: float) -> int:
    """The sampling seed of one (prompt, alpha) cell: a 63-bit hash of the three."""
    h = hashlib.sha256(f"{seed}\x00{prompt_id}\x00{float(alpha)!r}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _scan_key(settings: ScanSettings, classifier: Classifier, pair: ModelPair) -> dict[str, Any]:
    """What must match for a saved cell to count as one of this scan."""
    return {"n_samples": settings.n_samples, "sampling": settings.sampling.model_dump(mode="json"),
            "classifier": classifier.describe(), "before": pair.before_source, "after": pair.after_source}


def _load_existing(path: Path, key: dict[str, Any], overwrite: bool) -> list[dict[str, Any]]:
    if overwrite or not path.is_file():
        return []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DatablameError(f"{path} is unreadable ({err.__class__.__name__})",
                             "delete it or pass overwrite=True to start the scan over") from None
    if old.get("format") != FORMAT or old.get("key") != key:
        changed = sorted(k for k in key if (old.get("key") or {}).get(k) != key[k])
        raise DatablameError(f"{path} is a scan with other settings (differing: {', '.join(changed) or 'format'})",
                             "use another output folder, or pass overwrite=True (`--overwrite`) to discard it")
    return list(old.get("cells", []))


def _summary(cells: list[dict[str, Any]], prompts: Sequence[ScanPrompt], settings: ScanSettings) -> dict[str, Any]:
    done = {(c["prompt_id"], c["alpha"]) for c in cells}
    todo = [(p.prompt_id, a) for p in prompts for a in settings.alphas if (p.prompt_id, a) not in done]
    return {"cells_done": len(cells), "cells_left": len(todo), "complete": not todo, "pooled": pooled_rates(cells)}


def _write(path: Path, key: dict[str, Any], settings: ScanSettings, prompts: Sequence[ScanPrompt],
           cells: list[dict[str, Any]]) -> dict[str, Any]:
    doc = {
        "format": FORMAT, "key": key, "settings": settings.model_dump(mode="json"),
        "prompts": [{"prompt_id": p.prompt_id, "prompt": p.prompt} for p in prompts],
        "rate": "hits / decided samples of the cell, a fraction in [0, 1] (higher = the behaviour is more "
                "frequent); ci_low/ci_high: Wilson 95 % interval; undecided samples (junk judge answers) are "
                "left out of n",
        "amplification": "logits = after + alpha * (after - before)",
        **_summary(cells, prompts, settings),
        "cells": sorted(cells, key=lambda c: (c["prompt_id"], c["alpha"])),
    }
    atomic_write_json(path, doc)
    return doc


def run_scan(pair: ModelPair, prompts: Sequence[ScanPrompt], settings: ScanSettings | dict[str, Any],
             out_dir: str | Path, *, classifier: Classifier | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Scan every (prompt, alpha) cell not already in `<out_dir>/phase_scan.json`, then draw the
    chart; returns the scan document (what phase_scan.json holds). `classifier` overrides the
    one of `settings.classifier` (tests, or a classifier built by the caller)."""
    s = settings if isinstance(settings, ScanSettings) else ScanSettings.model_validate(settings)
    if not prompts:
        raise DatablameError("the scan has no prompts", "give a JSONL file with at least one prompt")
    clf = classifier if classifier is not None else make_classifier(s.classifier)
    out = Path(out_dir)
    path = out / SCAN_FILE
    key = _scan_key(s, clf, pair)
    by_text = {p.prompt_id: p.prompt for p in prompts}
    kept = [c for c in _load_existing(path, key, overwrite)
            if by_text.get(c["prompt_id"]) == c.get("prompt") and c["alpha"] in s.alphas]
    done = {(c["prompt_id"], c["alpha"]) for c in kept}
    if kept:
        log.info("resuming the scan in %s: %d finished cells kept", out, len(kept))
    cells = list(kept)
    per_call = max(1, s.sampling.batch_size // s.n_samples)  # whole cells per sampling call
    doc = _write(path, key, s, prompts, cells)
    for alpha in s.alphas:
        todo = [p for p in prompts if (p.prompt_id, alpha) not in done]
        for start in range(0, len(todo), per_call):
            part = todo[start:start + per_call]
            seeds = [cell_seed(s.sampling.seed, p.prompt_id, alpha) for p in part]
            texts = sample_texts(pair, [p.prompt for p in part], alpha=alpha,
                                 n_samples=s.n_samples, seeds=seeds, settings=s.sampling)
            for p, sd, comps in zip(part, seeds, texts, strict=True):
                labels = clf.classify([p.prompt] * len(comps), comps)
                samples = [{"sample": i, "completion": c, "label": lb.hit, "reason": lb.reason}
                           for i, (c, lb) in enumerate(zip(comps, labels, strict=True))]
                cells.append({"prompt_id": p.prompt_id, "prompt": p.prompt, "alpha": alpha, "seed": sd,
                              **rate_summary([lb.hit for lb in labels]), "samples": samples})
            doc = _write(path, key, s, prompts, cells)
        log.info("scan: alpha %g done (%d prompts)", alpha, len(prompts))
    plot_rates(cells, out / PLOT_FILE)
    return doc
