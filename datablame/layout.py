"""Where everything lives in a run directory (`output.dir`): the one place that names its paths.

    layout = RunLayout(cfg.output.dir)
    layout.final_model          # <run>/model/final
    layout.results_json         # <run>/attribution/results.json
    layout.lds_jobs_dir         # <run>/lds/jobs

Every other module asks a layout for a path instead of joining names itself, so the on-disk
shape of a run is written down once (README "Run directory" shows the same tree). Three
folders are also used on their own, outside a run, so they have layouts of their own that
`RunLayout` hands out: `ModelLayout` (a training output folder: `base/`, `final/`,
`checkpoint-<step>/`, `fingerprint.json`, `train_summary.json`), `AttributionLayout` (the
attribution folder, which is also the methods' `work_dir`: results, scores, comparison,
`history/`, `curvature/` and one cache folder per method) and `BenchLayout`.

Not named here: the inside of the feature store (`datablame.store.manifest`: its manifest,
shards, norms and verification cache are the store's own format, written wherever a store
is built) and of the text indices (`datablame.features.text_index`); a run only says where
they are (`store_dir`, `text_index_dir`) and what `datablame index` puts beside the store.
The files inside one Trainer checkpoint (`trainer_state.json`, `optimizer.pt`, ...) are
Hugging Face's.

This module imports only the standard library, so every package may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARKER = "run.json"  # ties a run directory to its data/model/training settings (datablame.runs)
RESOLVED_CONFIG = "config.resolved.yaml"
JOBS = "jobs"  # a retraining sweep's finished jobs, one <key>.json each (datablame.verify.sweep)
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a Trainer checkpoint folder named `checkpoint-<step>`, else None."""
    m = _CHECKPOINT.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def sweep_jobs_dir(sweep_dir: str | Path) -> Path:
    """Where a retraining sweep writing into `sweep_dir` keeps its finished jobs."""
    return Path(sweep_dir) / JOBS


@dataclass(frozen=True)
class ModelLayout:
    """A training output folder (`<run>/model`): what `finetune` and Trainer write."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def base(self) -> Path:
        """The initial weights (tiny models: saved so checkpoints, adapters and retraining can refer to them)."""
        return self.root / "base"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def train_record(self) -> Path:
        """What the model and its checkpoints were trained on (written when training starts)."""
        return self.root / "fingerprint.json"

    @property
    def train_summary(self) -> Path:
        return self.root / "train_summary.json"

    def checkpoint(self, step: int) -> Path:
        return self.root / f"checkpoint-{int(step)}"

    @property
    def superseded_dir(self) -> Path:
        """What a changed training length set aside, one `<UTC time>/` folder each: a final model
        of the old length, checkpoints past the new one (kept, but no longer the run's)."""
        return self.root / "superseded"

    def has_checkpoint_dirs(self) -> bool:
        """Anything named `checkpoint-*` (even one a Trainer left half-written)."""
        return any(self.root.glob("checkpoint-*"))

    def checkpoints(self) -> list[Path]:
        """Trainer checkpoints (`checkpoint-<step>`) sorted by step; [] when there are none."""
        if not self.root.is_dir():
            return []
        found = [(s, p) for p in self.root.iterdir() if (s := checkpoint_step(p)) is not None]
        return [p for _, p in sorted(found)]


@dataclass(frozen=True)
class AttributionLayout:
    """The attribution folder (`<run>/attribution`), which is also the methods' `work_dir`;
    a staging folder of a new result has the same file names."""

    root: Path
    RESULT_NAMES = ("results.json", "results.md", "report.html", "scores.npz",
                    "comparison.json", "comparison.md", "comparison.png")  # every file one result consists of

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def scores_npz(self) -> Path:
        return self.root / "scores.npz"

    @property
    def comparison_json(self) -> Path:
        return self.root / "comparison.json"

    @property
    def comparison_md(self) -> Path:
        return self.root / "comparison.md"

    @property
    def comparison_png(self) -> Path:
        return self.root / "comparison.png"

    def result_files(self) -> list[Path]:
        return [self.root / n for n in self.RESULT_NAMES]

    @property
    def history_dir(self) -> Path:
        """Earlier results, one `<UTC time>/` folder each (datablame.report.history)."""
        return self.root / "history"

    @property
    def curvature_dir(self) -> Path:
        return self.root / "curvature"

    def factor_path(self, kind: str) -> Path:
        """Fitted curvature factors of `kind` (ekfac, kfac, diagonal, ...)."""
        return self.curvature_dir / f"{kind}.safetensors"

    def cache_dir(self, name: str) -> Path:
        """A method's (or peer's) own folder for what it precomputes or reports, e.g.
        `checkpoint_features`, `llm_judge`, `peers/bergson`; its files are its own."""
        return self.root / name


@dataclass(frozen=True)
class BenchLayout:
    """What `datablame bench` writes (`<run>/bench`)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def bench_json(self) -> Path:
        return self.root / "bench.json"

    @property
    def bench_md(self) -> Path:
        return self.root / "bench.md"

    @property
    def readme_section(self) -> Path:
        return self.root / "readme_section.md"

    @property
    def pr_plot(self) -> Path:
        return self.root / "pr.png"

    @property
    def recall_plot(self) -> Path:
        return self.root / "recall_at_k.png"

    @property
    def scores_npz(self) -> Path:
        return self.root / "scores.npz"

    @property
    def done_dir(self) -> Path:
        """Finished methods' scores and costs, so `--resume` skips them."""
        return self.root / "done"


@dataclass(frozen=True)
class DiffLayout:
    """What `datablame diff` writes (`diff.out_dir`, default `<run>/diff`) beyond the scan,
    blame and report files that `datablame.diff` names itself: the patch stage (one record per
    finished arm x seed job under `patch/jobs/`, its LoRA model and its scan) and the final
    figures."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def patch_dir(self) -> Path:
        return self.root / "patch"

    @property
    def patch_jobs_dir(self) -> Path:
        """Finished patch jobs, one `<key>.json` each (a rerun skips them)."""
        return sweep_jobs_dir(self.patch_dir)

    def patch_model_dir(self, key: str) -> Path:
        """One patch job's fine-tune output (its `final/` is the LoRA model)."""
        return self.patch_dir / "models" / key

    def patch_scan_dir(self, key: str) -> Path:
        """One patched model's behaviour scan (phase_scan.json, behavior_rates.png)."""
        return self.patch_dir / "scans" / key

    @property
    def patch_json(self) -> Path:
        return self.patch_dir / "patching.json"

    @property
    def patching_png(self) -> Path:
        return self.root / "patching_comparison.png"

    @property
    def patching_csv(self) -> Path:
        return self.root / "patching_comparison.csv"

    @property
    def final_json(self) -> Path:
        return self.root / "final_results.json"

    @property
    def final_png(self) -> Path:
        return self.root / "final_results.png"

    @property
    def case_study_md(self) -> Path:
        return self.root / "case_study.md"


@dataclass(frozen=True)
class RunLayout:
    """Every path under a run directory. `RunLayout(run_dir)`; only names paths, creates nothing."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- the run itself ------------------------------------------------------------------
    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def resolved_config(self) -> Path:
        return self.root / RESOLVED_CONFIG

    # --- model/ --------------------------------------------------------------------------
    @property
    def model(self) -> ModelLayout:
        return ModelLayout(self.root / "model")

    @property
    def model_dir(self) -> Path:
        return self.model.root

    @property
    def base_model(self) -> Path:
        return self.model.base

    @property
    def final_model(self) -> Path:
        return self.model.final

    def checkpoints(self) -> list[Path]:
        return self.model.checkpoints()

    def checkpoint(self, step: int) -> Path:
        return self.model.checkpoint(step)

    @property
    def train_record(self) -> Path:
        return self.model.train_record

    @property
    def train_summary(self) -> Path:
        return self.model.train_summary

    @property
    def pipeline_json(self) -> Path:
        """`datablame pipeline`: which stages finished, with the hash of the config they ran with."""
        return self.root / "pipeline.json"

    @property
    def evaluate_dir(self) -> Path:
        """`datablame evaluate`: evaluation.json/.md/.html, model_scores_comparison.png, train.png, tracking/."""
        return self.root / "evaluate"

    # --- attribution/ --------------------------------------------------------------------
    @property
    def attribution(self) -> AttributionLayout:
        return AttributionLayout(self.root / "attribution")

    @property
    def attribution_dir(self) -> Path:
        """`attribute`'s outputs; also the methods' `work_dir`."""
        return self.attribution.root

    @property
    def results_json(self) -> Path:
        return self.attribution.results_json

    @property
    def scores_npz(self) -> Path:
        return self.attribution.scores_npz

    @property
    def history_dir(self) -> Path:
        return self.attribution.history_dir

    @property
    def curvature_dir(self) -> Path:
        return self.attribution.curvature_dir

    def factor_path(self, kind: str) -> Path:
        return self.attribution.factor_path(kind)

    # --- store/ and index/ (`datablame index`) -------------------------------------------
    @property
    def store_dir(self) -> Path:
        """The gradient feature store (its own format: datablame.store)."""
        return self.root / "store"

    @property
    def store_row_losses_dir(self) -> Path:
        """Per-row losses saved beside the store, one `<start>-<stop>.npy` per shard."""
        return self.store_dir / "row_losses"

    def row_losses_file(self, start: int, stop: int) -> Path:
        return self.store_row_losses_dir / f"{start}-{stop}.npy"

    @property
    def faiss_index(self) -> Path:
        return self.store_dir / "faiss.index"

    @property
    def index_summary(self) -> Path:
        return self.store_dir / "index_summary.json"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def text_index_dir(self) -> Path:
        """The retrieval cascade's BM25 and embedding indices (their own format: text_index)."""
        return self.index_dir / "text"

    # --- verify/ -------------------------------------------------------------------------
    @property
    def verify_dir(self) -> Path:
        return self.root / "verify"

    @property
    def verify_jobs_dir(self) -> Path:
        return sweep_jobs_dir(self.verify_dir)

    def verify_json(self, suffix: str = "") -> Path:
        """verify.json; `suffix` "_flip" for the flip strategy."""
        return self.verify_dir / f"verify{suffix}.json"

    def verify_plot(self, suffix: str = "") -> Path:
        return self.verify_dir / f"effect_vs_k{suffix}.png"

    @property
    def loo_json(self) -> Path:
        return self.verify_dir / "loo.json"

    @property
    def loo_effects(self) -> Path:
        return self.verify_dir / "loo_effects.npz"

    @property
    def loo_plot(self) -> Path:
        return self.verify_dir / "loo.png"

    # --- lds/ ----------------------------------------------------------------------------
    @property
    def lds_dir(self) -> Path:
        return self.root / "lds"

    @property
    def lds_jobs_dir(self) -> Path:
        """The LDS subset models' records (also read by the `datamodels` method)."""
        return sweep_jobs_dir(self.lds_dir)

    @property
    def lds_json(self) -> Path:
        return self.lds_dir / "lds.json"

    @property
    def lds_plot(self) -> Path:
        return self.lds_dir / "lds.png"

    # --- diff/ ---------------------------------------------------------------------------
    @property
    def diff_dir(self) -> Path:
        """`datablame diff`'s default output folder (`DiffLayout(diff_dir)` names its files)."""
        return self.root / "diff"

    # --- bench/, inspect/ ----------------------------------------------------------------
    @property
    def bench(self) -> BenchLayout:
        return BenchLayout(self.root / "bench")

    @property
    def bench_dir(self) -> Path:
        return self.bench.root

    @property
    def inspect_dir(self) -> Path:
        """`datablame inspect`'s default output folder (factor plots)."""
        return self.root / "inspect"
