"""Experiment tracking of an evaluation: params, metrics and artifacts (PNGs, JSON).

Backends: `none` (default), `mlflow` (a local sqlite store under the output folder unless a
tracking URI is given; artifacts beside it), `tensorboard` (event files: metrics as scalars,
params and JSON as text, PNGs as images) and `wandb` (offline mode, only when installed).

Results are written to disk before anything is tracked, and `log_safely` turns a tracker's
failure into a warning plus a note in the result: a broken tracker never loses them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from datablame.errors import DatablameError
from datablame.evaluate.settings import TrackingSettings

log = logging.getLogger("datablame")


class Tracker:
    """The interface; this base class is the `none` backend (does nothing)."""

    name = "none"
    location: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the run's settings (`none`: nothing is recorded)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metric values (`none`: nothing is recorded)."""

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file (`none`: nothing is attached)."""

    def close(self) -> None:
        """Finish the tracked run (`none`: nothing to finish)."""


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, settings: TrackingSettings, out_dir: Path, run_name: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise DatablameError("tracking.backend mlflow needs mlflow, which is not installed",
                                 "pip install mlflow==3.17.2, or set tracking.backend: none") from None
        base = out_dir / "tracking"
        base.mkdir(parents=True, exist_ok=True)
        self.location = settings.uri or f"sqlite:///{(base / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=self.location)
        exp = self.client.get_experiment_by_name(settings.experiment)
        if exp is None:
            art = None if settings.uri else (base / "mlartifacts").resolve().as_uri()
            exp_id = self.client.create_experiment(settings.experiment, artifact_location=art)
        else:
            exp_id = exp.experiment_id
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        for k, v in _flat(params).items():
            self.client.log_param(self.run_id, k, v[:6000])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            self.client.log_metric(self.run_id, k, float(v), step=step or 0)

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, settings: TrackingSettings, out_dir: Path, run_name: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DatablameError("tracking.backend tensorboard needs tensorboard, which is not installed",
                                 "pip install tensorboard==2.21.0, or set tracking.backend: none") from None
        logdir = Path(settings.dir) if settings.dir else out_dir / "tracking" / "tensorboard" / run_name
        self.location = str(logdir)
        self.writer = SummaryWriter(log_dir=str(logdir))

    def log_params(self, params: Mapping[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in _flat(params).items())
        self.writer.add_text("params", text)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, float(v), global_step=step or 0)

    def log_artifact(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix.lower() == ".png":
            import matplotlib.image as mpimg

            img = mpimg.imread(str(path))[..., :3]
            self.writer.add_image(path.stem, img, dataformats="HWC")
        elif path.suffix.lower() in (".json", ".md"):
            self.writer.add_text(path.name, "    " + path.read_text(encoding="utf-8")[:100_000].replace("\n", "\n    "))

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, settings: TrackingSettings, out_dir: Path, run_name: str) -> None:
        try:
            import wandb
        except ImportError:
            raise DatablameError("tracking.backend wandb needs wandb, which is not installed",
                                 "pip install wandb (it runs offline), or use tracking.backend mlflow or tensorboard") from None
        wdir = Path(settings.dir) if settings.dir else out_dir / "tracking" / "wandb"
        wdir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_MODE", "offline")
        self.wandb = wandb
        self.run = wandb.init(project=settings.experiment, name=run_name, dir=str(wdir), mode="offline")
        self.location = str(wdir)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(_flat(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path) -> None:
        self.run.save(str(path), base_path=str(Path(path).parent), policy="now")

    def close(self) -> None:
        self.run.finish()


BACKENDS: dict[str, type[Tracker]] = {
    "none": Tracker, "mlflow": MlflowTracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker,
}


def make_tracker(settings: TrackingSettings, out_dir: str | Path, run_name: str) -> Tracker:
    cls = BACKENDS[settings.backend]
    return Tracker() if cls is Tracker else cls(settings, Path(out_dir), settings.run_name or run_name)


def log_safely(
    settings: TrackingSettings, out_dir: str | Path, run_name: str, params: Mapping[str, Any],
    metrics: Mapping[str, float], artifacts: list[Path],
    factory: Callable[[TrackingSettings, str | Path, str], Tracker] = make_tracker,
    series: list[tuple[int, Mapping[str, float]]] | None = None,
) -> dict[str, Any]:
    """Track one evaluation or pipeline stage; a failure is logged and reported, never raised.
    `series`: (step, metrics) pairs, e.g. the training loss curve. Returns a note for the
    result: {backend, ok, location?, error?}."""
    note: dict[str, Any] = {"backend": settings.backend, "ok": True}
    if settings.backend == "none":
        return note
    tracker = None
    try:
        tracker = factory(settings, out_dir, run_name)
        note["location"] = tracker.location
        tracker.log_params(params)
        for step, values in series or []:
            tracker.log_metrics(values, step=step)
        tracker.log_metrics(metrics)
        for path in artifacts:
            tracker.log_artifact(path)
    except Exception as err:  # noqa: BLE001 - any tracker failure: results are already on disk
        log.warning("tracking with %s failed (%s: %s); the results in %s are complete",
                    settings.backend, type(err).__name__, err, out_dir)
        note.update(ok=False, error=f"{type(err).__name__}: {err}")
    finally:
        if tracker is not None:
            try:
                tracker.close()
            except Exception as err:  # noqa: BLE001
                log.warning("closing the %s tracker failed (%s)", settings.backend, err)
    return note


_PACKAGES = {"mlflow": ("mlflow", "mlflow==3.17.2"), "tensorboard": ("tensorboard", "tensorboard==2.21.0"),
             "wandb": ("wandb", "wandb")}


def check_tracker(settings: TrackingSettings) -> None:
    """Fail before the evaluation starts when the backend's package is missing."""
    if settings.backend not in _PACKAGES:
        return
    import importlib.util

    module, pip = _PACKAGES[settings.backend]
    if importlib.util.find_spec(module) is None:
        raise DatablameError(f"tracking.backend {settings.backend} needs the package {module}, which is not installed",
                             f"pip install {pip}, or set tracking.backend: none")
