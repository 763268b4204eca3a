"""RunLayout names every path under a run directory: each is under the root, a real small
run writes exactly what it names, and no other module spells those names (an ast walk)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pipeline_config import small_config

from datablame.layout import (
    AttributionLayout,
    BenchLayout,
    ModelLayout,
    RunLayout,
    checkpoint_step,
    sweep_jobs_dir,
)

REPO = Path(__file__).resolve().parents[1]


def _paths(layout) -> dict[str, Path]:
    """Every Path a layout hands out: its properties, its methods called with sample
    arguments, and (recursively) the sub-layouts it returns."""
    calls = {"checkpoint": (3,), "factor_path": ("ekfac",), "cache_dir": ("less_features",), "verify_json": ("_flip",),
             "verify_plot": ("_flip",), "row_losses_file": (0, 16)}
    out: dict[str, Path] = {}
    for name in dir(type(layout)):
        if name.startswith("_") or name in ("root", "RESULT_NAMES"):
            continue
        attr = getattr(type(layout), name)
        if isinstance(attr, property):
            value = getattr(layout, name)
        elif callable(attr):
            value = getattr(layout, name)(*calls.get(name, ()))
        else:
            continue
        if isinstance(value, (ModelLayout, AttributionLayout, BenchLayout)):
            out.update({f"{name}.{k}": v for k, v in _paths(value).items()})
            value = value.root
        if isinstance(value, bool):
            continue
        for i, p in enumerate(value if isinstance(value, list) else [value]):
            out[f"{name}[{i}]" if isinstance(value, list) else name] = p
    return out


def test_every_path_is_under_the_root(tmp_path):
    layout = RunLayout(tmp_path / "run")
    paths = _paths(layout)
    assert len(paths) > 40
    for name, p in paths.items():
        assert isinstance(p, Path), name
        assert p.is_relative_to(layout.root) and p != layout.root, name
    assert RunLayout(str(tmp_path)) == RunLayout(tmp_path)  # a str root is a Path
    assert layout.lds_jobs_dir == sweep_jobs_dir(layout.lds_dir)  # where the LDS sweep writes, datamodels reads
    assert layout.verify_jobs_dir == sweep_jobs_dir(layout.verify_dir)
    assert checkpoint_step(layout.checkpoint(12)) == 12 and checkpoint_step(layout.final_model) is None
    assert [p.name for p in layout.attribution.result_files()] == list(AttributionLayout.RESULT_NAMES)
    assert not (tmp_path / "run").exists()  # naming paths creates nothing


def test_checkpoints_sorted_by_step(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.checkpoints() == [] and not layout.model.has_checkpoint_dirs()
    for step in (12, 3, 100):
        layout.checkpoint(step).mkdir(parents=True)
    (layout.model_dir / "checkpoint-x").mkdir()  # not a Trainer checkpoint
    assert layout.checkpoints() == [layout.checkpoint(3), layout.checkpoint(12), layout.checkpoint(100)]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A small planted run: trained, attributed twice (two methods, one with curvature
    factors) and indexed (store, FAISS, text indices)."""
    from datablame import api

    cfg = small_config(tmp_path_factory.mktemp("layout") / "run",
                       attribution={"methods": ["grad_cosine", "diag_influence"], "store": {"shard_rows": 32}})
    outcome = api.run(cfg)
    api.attribute(cfg, progress=False)
    summary = api.index(cfg, faiss="flat", progress=False)
    inputs, _ = api.prepare_inputs(cfg, use_store=False)
    return cfg, outcome, summary, inputs


def test_layout_matches_what_a_real_run_writes(real_run):
    from datablame.features.text_index import has_text_indices
    from datablame.store.manifest import has_manifest

    cfg, outcome, summary, inputs = real_run
    layout = RunLayout(cfg.output.dir)
    assert outcome.run_dir == layout.root
    assert layout.marker.is_file() and layout.resolved_config.is_file()
    assert layout.base_model.is_dir() and layout.final_model.is_dir()
    assert layout.train_record.is_file() and layout.train_summary.is_file()
    ckpts = layout.checkpoints()
    assert ckpts and all(p.is_dir() and p == layout.checkpoint(checkpoint_step(p)) for p in ckpts)
    assert inputs.checkpoints == ckpts and inputs.work_dir == layout.attribution_dir and inputs.run_dir == layout.root
    assert inputs.base_model == layout.base_model
    att = layout.attribution
    for f in att.result_files():
        assert f.is_file(), f
    assert outcome.paths["json"] == layout.results_json and outcome.paths["scores"] == layout.scores_npz
    assert [p for p in layout.history_dir.iterdir() if p.is_dir()], "the first result moved to history"
    assert layout.factor_path("diagonal").is_file() and layout.curvature_dir.is_dir()
    assert has_manifest(layout.store_dir) and summary["store"] == str(layout.store_dir)
    assert layout.faiss_index.is_file() and layout.index_summary.is_file()
    assert sorted(layout.store_row_losses_dir.glob("*.npy")) and layout.row_losses_file(0, 32).is_file()
    assert has_text_indices(layout.text_index_dir) and summary["text_indices"]["path"] == str(layout.text_index_dir)
    # nothing at the top of the run or of model/ that the layout does not name
    named = set(_paths(layout).values())
    assert {p for p in layout.root.iterdir()} <= named
    assert {p for p in layout.model_dir.iterdir()} <= named | set(ckpts)


# string constants (file names) and `x / "<dir>"` joins that only datablame/layout.py may spell
FILE_NAMES = {"run.json", "config.resolved.yaml", "fingerprint.json", "train_summary.json", "results.json",
              "results.md", "report.html", "scores.npz", "comparison.json", "lds.json", "lds.png", "verify.json",
              "loo.json", "loo_effects.npz", "bench.json", "index_summary.json", "faiss.index", "checkpoint-"}
DIR_NAMES = {"model", "final", "base", "attribution", "history", "curvature", "store", "row_losses", "index", "text",
             "verify", "lds", "jobs", "bench", "done", "inspect"}


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lstrip("/") in FILE_NAMES:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                and node.right.value in DIR_NAMES | FILE_NAMES):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: / {node.right.value!r}")
    return found


def test_only_layout_names_run_paths():
    layout_py = REPO / "datablame" / "layout.py"
    files = [p for d in ("datablame", "benchmarks") for p in sorted((REPO / d).rglob("*.py")) if p != layout_py]
    assert len(files) > 100
    bad = [v for p in files for v in _violations(p)]
    assert not bad, "run-directory paths built outside datablame/layout.py (use RunLayout):\n" + "\n".join(bad)
    assert _violations(layout_py), "the check must see the names where they do live"
