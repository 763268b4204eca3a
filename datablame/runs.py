"""Run directories: one per run, with a marker that ties it to its data/model/training config.

A directory that holds another run (different data, model or training settings) is never
reused silently: the user picks another `output.dir`, or sets `output.overwrite: true`, in
which case the old directory is moved aside (renamed), not deleted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from pathlib import Path

from datablame.config import RunConfig
from datablame.errors import DatablameError
from datablame.layout import MARKER, RunLayout
from datablame.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("datablame")

# bump when the same data and config would train a different model (refuses older trained models)
TRAIN_FORMAT = 1
_WARNED: set[str] = set()  # runs without a data fingerprint, warned about once per process


def run_key(cfg: RunConfig) -> str:
    """What makes a trained model: data, model and training sections (not attribution).

    Only the settings that differ from their defaults count, so a datablame upgrade that adds
    a new option (with a default that keeps the old behaviour) does not orphan earlier runs.
    """
    d = cfg.model_dump(mode="json", exclude_defaults=True)
    payload = json.dumps({k: d.get(k, {}) for k in ("data", "model", "training")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def full_run_key(cfg: RunConfig) -> str:
    """Every data/model/training field, defaults included: the conservative key the retraining
    job caches use, and the run-directory key of markers written before `run_key` left out
    defaults."""
    d = cfg.model_dump(mode="json")
    payload = json.dumps({k: d[k] for k in ("data", "model", "training")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_run_dir(cfg: RunConfig, data_fingerprint: str | None = None) -> Path:
    """Create or adopt `cfg.output.dir` for this run and return it.

    `data_fingerprint` (the corpus' `Corpus.fingerprint()`, passed by `train`): a run whose
    model was trained on other data is refused, or moved aside with `output.overwrite: true`.
    """
    out = Path(cfg.output.dir)
    marker = RunLayout(out).marker
    key = run_key(cfg)
    if out.exists() and not out.is_dir():
        raise DatablameError(f"output.dir {out} is a file, not a directory", "choose a directory path for output.dir")
    if out.exists() and cfg.output.overwrite:
        _check_movable(cfg, out)
    if out.exists() and any(out.iterdir()):
        if not marker.is_file():
            raise DatablameError(
                f"output directory {out} is not empty and holds no datablame run (no {MARKER})"
                + (", so output.overwrite will not move it aside" if cfg.output.overwrite else ""),
                "choose an empty or new output.dir",
            )
        old: dict | None = read_marker(out)
        if old.get("run_key") == full_run_key(cfg):  # same run, marker from an older version
            old = {**old, "run_key": key}
            atomic_write_json(marker, old)
        elif old.get("run_key") != key:
            if not cfg.output.overwrite:
                raise DatablameError(
                    f"output directory {out} holds another run ({old.get('name')!r}, created "
                    f"{old.get('created')}) with different data/model/training settings",
                    "choose another output.dir, or set output.overwrite: true (the old run is "
                    "moved aside, not deleted)",
                )
            _move_aside(out)
            old = None
        trained = trained_data_fingerprint(out) if old is not None and data_fingerprint else None
        if trained is not None and trained != data_fingerprint:
            if not cfg.output.overwrite:
                raise data_changed_error(cfg, out, trained, data_fingerprint)
            log.info("%s changed since the model in %s was trained: moving the old run aside", _data_desc(cfg), out)
            _move_aside(out)
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        atomic_write_json(
            marker,
            {"name": cfg.name, "run_key": key, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        )
    atomic_write_text(RunLayout(out).resolved_config, cfg.to_yaml())
    return out


def read_marker(out: Path) -> dict:
    """The run marker of `out`, or a one-line error naming it when it is damaged."""
    marker = RunLayout(out).marker
    fix = (f"choose a new output.dir, or repair {marker} (a JSON object with the run's name, run_key "
           "and created; a copy of the marker of a run with the same config works)")
    try:
        raw = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DatablameError(f"the run marker {marker} is unreadable or not valid JSON ({type(err).__name__})",
                             fix) from None
    if not isinstance(raw, dict):
        raise DatablameError(f"the run marker {marker} is not a JSON object (it holds a {type(raw).__name__})", fix)
    return raw


# --- what the trained model was trained on ------------------------------------------

def model_record_path(run_dir: str | Path) -> Path:
    return RunLayout(run_dir).train_record


def _has_trained_artifacts(run_dir: Path) -> bool:
    """Anything built from the data: final model, checkpoints, a tiny model's base (its tokenizer)."""
    model = RunLayout(run_dir).model
    return model.final.is_dir() or model.base.is_dir() or model.has_checkpoint_dirs()


def trained_data_fingerprint(run_dir: str | Path) -> str | None:
    """The data fingerprint the run's model (and its checkpoints) were trained on; None when
    nothing was trained yet, or when an older datablame trained it without recording one
    (then: warned once, and the run keeps working)."""
    run_dir = Path(run_dir)
    if not _has_trained_artifacts(run_dir):
        return None
    path = model_record_path(run_dir)
    if path.is_file():
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("data_fingerprint"), str):
            raise DatablameError(f"{path} is damaged, so what the model was trained on is unknown",
                                 "choose a new output.dir, or set output.overwrite: true to move this run aside")
        return rec["data_fingerprint"]
    if RunLayout(run_dir).marker.is_file():
        fp = read_marker(run_dir).get("data_fingerprint")
        if isinstance(fp, str):
            return fp
    if str(run_dir.resolve()) not in _WARNED:
        _WARNED.add(str(run_dir.resolve()))
        log.warning("the model in %s records no data fingerprint (trained by an older datablame): datablame "
                    "cannot tell whether the data changed since; retrain in a new output.dir if it did", run_dir)
    return None


def record_training_data(run_dir: str | Path, cfg: RunConfig, data_fingerprint: str, n_rows: int) -> None:
    """Written when training starts (so checkpoints are covered too): model/fingerprint.json
    and the marker's `data_fingerprint`. Kept when the model already has one (`prepare_run_dir`
    compared it); not written over a model an older datablame trained (its data stays unknown)."""
    run_dir = Path(run_dir)
    path = model_record_path(run_dir)
    if _has_trained_artifacts(run_dir) and (path.is_file() or cfg.training.resume):
        return
    atomic_write_json(path, {
        "format": TRAIN_FORMAT, "data_fingerprint": data_fingerprint, "rows": n_rows, "run_key": run_key(cfg),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    marker = RunLayout(run_dir).marker
    atomic_write_json(marker, {**read_marker(run_dir), "data_fingerprint": data_fingerprint})


def check_model_data(cfg: RunConfig, run_dir: str | Path, data_fingerprint: str) -> None:
    """Refuse to use the run's trained model (attribution, verify, LDS) on other data than it was trained on."""
    trained = trained_data_fingerprint(run_dir)
    if trained is not None and trained != data_fingerprint:
        raise data_changed_error(cfg, Path(run_dir), trained, data_fingerprint, attributing=True)


def _data_desc(cfg: RunConfig) -> str:
    if cfg.data.source in ("file", "hf"):
        return f"the content of data.path {cfg.data.path}"
    return f"the {cfg.data.source} corpus"


def data_changed_error(cfg: RunConfig, out: Path, trained: str, now: str, *, attributing: bool = False) -> DatablameError:
    use = "; attributing with it would blame rows it never saw" if attributing else ""
    return DatablameError(
        f"{_data_desc(cfg)} changed since the model in {RunLayout(out).model_dir} was trained (data fingerprint "
        f"{trained[:12]} then, {now[:12]} now){use}",
        "retrain: set output.overwrite: true and run `datablame train` (the old run is moved aside, not "
        "deleted), or choose a new output.dir; or restore the data the model was trained on",
    )


# --- moving a run aside (output.overwrite) --------------------------------------------

def _check_movable(cfg: RunConfig, out: Path) -> None:
    """`output.overwrite: true` may rename `out`: refuse when that would take the data, the
    queries, the current directory or the home directory with it."""
    target = out.resolve()
    protected = [("the current directory", Path.cwd()), ("your home directory", Path.home())]
    if cfg.data.source in ("file", "hf") and cfg.data.path and Path(cfg.data.path).exists():
        protected.append((f"data.path {cfg.data.path}", Path(cfg.data.path)))
    if cfg.attribution.queries_file and Path(cfg.attribution.queries_file).exists():
        protected.append((f"attribution.queries_file {cfg.attribution.queries_file}", Path(cfg.attribution.queries_file)))
    for what, p in protected:
        p = p.resolve()
        if p == target or p.is_relative_to(target):
            raise DatablameError(
                f"output.overwrite: true could move aside output.dir {out}, which "
                f"{'is' if p == target else 'contains'} {what}",
                "choose a new output.dir of its own (e.g. runs/<name>) that holds no data, or set output.overwrite: false",
            )


def _move_aside(out: Path) -> Path:
    if not RunLayout(out).marker.is_file():  # never rename a directory that is not a datablame run
        raise DatablameError(f"{out} holds no datablame run ({MARKER}), so it is not moved aside",
                             "choose an empty or new output.dir")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = out.with_name(f"{out.name}.old-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = out.with_name(f"{out.name}.old-{stamp}-{n}")
    out.rename(dest)
    log.info("moved the old run %s aside to %s", out, dest)
    return dest
