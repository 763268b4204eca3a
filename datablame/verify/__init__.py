"""Counterfactual retraining (seed 001): prove attributions by removing the rows and retraining.

- `verify(cfg)`: top-k removal (or label flip) against random-k controls and the baseline,
  several seeds, effect with CI, p-value and verdict (`removal.py`, `stats.py`);
- `leave_one_out(cfg)`: one retraining per row, compared with the methods' scores;
- `lds(cfg, methods)`: the linear datamodeling score over random subset models (`lds.py`);
  the `datamodels` method (datablame/methods/datamodels.py) is fitted on the same models.

Retraining jobs (`retrain.py`) run as Ray tasks and are cached per job (`sweep.py`), so an
interrupted sweep resumes without retraining what finished.
"""

from datablame.verify.lds import LDSReport, lds, subset_masks
from datablame.verify.removal import VerifyReport, leave_one_out, verify
from datablame.verify.retrain import RetrainContext, RetrainJob, execute, job_key
from datablame.verify.sweep import SweepOutcome, run_jobs

__all__ = [
    "LDSReport", "RetrainContext", "RetrainJob", "SweepOutcome", "VerifyReport", "execute", "job_key",
    "lds", "leave_one_out", "run_jobs", "subset_masks", "verify",
]
