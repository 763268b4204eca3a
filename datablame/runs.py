"""Run directories: one per run, with a marker that ties it to its data/model/training config.

A directory that holds another run (different data, model or training settings) is never
reused silently: the user picks another `output.dir`, or sets `output.overwrite: true`, in
which case the old directory is moved aside (renamed), not deleted. Two exceptions, each
with a log line: a directory whose run finished nothing (a failed or interrupted start:
no trained model, checkpoint or result) is reused with the new settings; and when only
the training length changed (`num_train_epochs`, `max_steps`), `train` resumes from the
last checkpoint within the new length (see `datablame.train.finetune` for the lr schedule).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
from pathlib import Path

import yaml

from datablame.config import RunConfig
from datablame.errors import DatablameError
from datablame.layout import MARKER, ModelLayout, RunLayout
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
        length_change: list[str] = []
        if old.get("run_key") == full_run_key(cfg):  # same run, marker from an older version
            old = {**old, "run_key": key}
            atomic_write_json(marker, old)
        elif old.get("run_key") != key:
            diff = settings_diff(_marker_config(out, old), cfg)
            if not _kept_work(out):  # a failed or interrupted start: nothing worth keeping
                _replace_unfinished(out, f"its earlier settings{_diff_text(diff)}")
                old = None
            elif diff and all(d.split(" ", 1)[0] in _LENGTH for d in diff) and not cfg.output.overwrite:
                if data_fingerprint is None:  # attribute/verify/...: the model is the old length
                    raise DatablameError(
                        f"the model in {RunLayout(out).model_dir} was trained for another length than this "
                        f"config asks for{_diff_text(diff)}",
                        "run `datablame train` first (it resumes from the last checkpoint within the new "
                        "length), or restore the training length, or choose another output.dir",
                    )
                length_change = diff
            elif not cfg.output.overwrite:
                raise DatablameError(
                    f"output directory {out} holds another run ({old.get('name')!r}, created "
                    f"{old.get('created')}) with different data/model/training settings{_diff_text(diff)}",
                    "choose another output.dir, or set output.overwrite: true (the old run is "
                    "moved aside, not deleted)",
                )
            else:
                _move_aside(out)
                old = None
        trained = trained_data_fingerprint(out) if old is not None and data_fingerprint else None
        if trained is not None and trained != data_fingerprint:
            if not _kept_work(out):  # only the leftovers of a start that failed: rebuilt from this data
                _replace_unfinished(out, f"the data fingerprint {trained[:12]} of its unfinished start")
            elif not cfg.output.overwrite:
                raise data_changed_error(cfg, out, trained, data_fingerprint)
            else:
                log.info("%s changed since the model in %s was trained: moving the old run aside",
                         _data_desc(cfg), out)
                _move_aside(out)
        if length_change:
            _change_length(out, cfg, length_change)
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


# --- reusing a run directory: a corrected rerun, or a longer/shorter training ----------

_LENGTH = ("training.num_train_epochs", "training.max_steps")  # may change; training then resumes


def _marker_config(out: Path, marker: dict) -> RunConfig | None:
    """The settings the marker stands for, from the run's resolved config; None when that file
    is missing or unreadable, or no longer hashes to the marker's key."""
    from datablame.config import load_yaml, parse_config

    try:
        old = parse_config(load_yaml(RunLayout(out).resolved_config.read_text(encoding="utf-8")))
    except (OSError, ValueError, yaml.YAMLError, DatablameError):
        return None
    return old if marker.get("run_key") in (run_key(old), full_run_key(old)) else None


def settings_diff(old: RunConfig | None, new: RunConfig) -> list[str] | None:
    """The data/model/training settings that differ, as `section.key old -> new`; None when
    the old settings are unknown."""
    if old is None:
        return None

    def flat(cfg: RunConfig) -> dict[str, object]:
        d = cfg.model_dump(mode="json")
        return {f"{sec}.{k}": v for sec in ("data", "model", "training") for k, v in d[sec].items()}

    a, b = flat(old), flat(new)
    return [f"{k} {_short(a.get(k))} -> {_short(b.get(k))}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _short(v: object) -> str:
    r = json.dumps(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _diff_text(diff: list[str] | None) -> str:
    return f" ({'; '.join(diff)})" if diff else ""


def _kept_work(out: Path) -> Path | None:
    """A file worth keeping in `out` (a trained model, a checkpoint, a result, a store, ...),
    or None when it holds only what a start that never finished a stage leaves: the marker,
    the resolved config, the training record and a tiny model's base (rebuilt in seconds)."""
    lay = RunLayout(out)
    spare = {lay.marker, lay.resolved_config, lay.train_record}
    return next((p for p in out.rglob("*")
                 if p.is_file() and p not in spare and not p.is_relative_to(lay.base_model)), None)


def _replace_unfinished(out: Path, what: str) -> None:
    """Clear the leftovers of a start that finished nothing, so this run starts afresh here."""
    lay = RunLayout(out)
    old = read_marker(out)
    if lay.base_model.is_dir():
        shutil.rmtree(lay.base_model)
    lay.train_record.unlink(missing_ok=True)
    lay.marker.unlink(missing_ok=True)
    log.info("output directory %s held an unfinished run (%r, created %s; no trained model, checkpoint or "
             "result): reusing it and replacing %s", out, old.get("name"), old.get("created"), what)


def set_aside(model: ModelLayout, paths: list[Path], why: str) -> Path | None:
    """Move the existing `paths` (under `model`) into `model/superseded/<UTC time>/`, kept whole
    and out of the run's view (checkpoint lists, the final model); returns that folder."""
    paths = [p for p in paths if p.exists()]
    if not paths:
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest, n = model.superseded_dir / stamp, 1
    while dest.exists():
        n += 1
        dest = model.superseded_dir / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    for p in paths:
        p.rename(dest / p.name)
    log.info("set aside %s in %s (%s)", ", ".join(p.name for p in paths), dest, why)
    return dest


def _change_length(out: Path, cfg: RunConfig, diff: list[str]) -> None:
    """Only the training length changed: the checkpoints stay (training resumes from the last
    one within the new length, `datablame.train.finetune`), a model finished at the old length
    is set aside, and the marker takes the new settings."""
    lay = RunLayout(out)
    moved = set_aside(lay.model, [lay.final_model, lay.train_summary], "trained for the old length")
    atomic_write_json(lay.marker, {**read_marker(out), "run_key": run_key(cfg)})
    try:
        rec = json.loads(lay.train_record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        rec = None
    if isinstance(rec, dict):
        atomic_write_json(lay.train_record, {**rec, "run_key": run_key(cfg)})
    log.info("only the training length changed (%s): training resumes from the last checkpoint within the "
             "new length instead of starting over%s", "; ".join(diff),
             " (the model finished at the old length is kept aside)" if moved else "")


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
