"""The stale-data test: edit the data file under the same path and rerun -- the trained model,
its checkpoints, the feature store, the curvature factors, the text indices and the retraining
jobs are each refused or rebuilt, never reused for rows they were not built from."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import pytest
from file_run import cli, tree_bytes, write_config, write_rows

from datablame.errors import DatablameError

EDIT = {3: " The capital of Country3 is Atlantis."}  # one poisoned row, same path
REL_OUT, REL_DATA = Path("run"), Path("data.jsonl")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A trained, indexed and attributed run on the original data (the pristine copy). Paths in
    the config are relative (data.jsonl, run), so a copy of the folder is the same run."""
    root = tmp_path_factory.mktemp("stale")
    write_rows(root / "data.jsonl")
    write_config(root / "run.yaml", REL_OUT, REL_DATA)
    with contextlib.chdir(root):
        for args in (["train"], ["index", "--no-text-indices"], ["attribute"]):
            res = cli(*args, "--config", "run.yaml")
            assert res.exit_code == 0, res.output
    return root


@pytest.fixture
def run_copy(built, tmp_path, monkeypatch):
    """A private copy of the run and its data (the current directory), so each test may edit
    and retrain."""
    shutil.copytree(built / "run", tmp_path / "run")
    shutil.copy(built / "run.yaml", tmp_path / "run.yaml")
    data = write_rows(tmp_path / "data.jsonl")
    monkeypatch.chdir(tmp_path)
    return tmp_path, data, tmp_path / "run.yaml"


def _cfg(path):
    from datablame.config import load_config

    return load_config(path)


def _api_cfg(root, monkeypatch):
    """The built run's config, from its folder (for API calls)."""
    monkeypatch.chdir(root)
    return _cfg("run.yaml")


def test_training_records_what_it_was_trained_on(built, monkeypatch):
    from datablame.api import load_corpus

    fp = load_corpus(_api_cfg(built, monkeypatch))[0].fingerprint()
    rec = json.loads((built / "run" / "model" / "fingerprint.json").read_text())
    assert rec["data_fingerprint"] == fp and rec["rows"] == 24 and rec["format"] == 1
    assert json.loads((built / "run" / "run.json").read_text())["data_fingerprint"] == fp
    res = json.loads((built / "run" / "attribution" / "results.json").read_text())
    assert res["data"]["fingerprint"] == fp and res["model"]["trained_on_data"] == fp
    store = res["data"]["store"]  # the rows' features came from the store: which one is recorded
    assert store["identity"]["data"] == fp and len(store["identity_sha256"]) == 64


@pytest.mark.parametrize("command", ["train", "attribute", "index"])
def test_edited_data_is_refused_not_reused(run_copy, command):
    root, data, cfg = run_copy
    before = tree_bytes(root / "run")
    write_rows(data, EDIT)
    res = cli(command, "--config", str(cfg))
    assert res.exit_code == 2, res.output
    assert f"data.path {REL_DATA} changed since the model in {REL_OUT / 'model'}" in res.stderr
    assert "output.overwrite: true" in res.stderr and "Traceback" not in res.output
    assert "reusing trained model" not in res.output
    assert tree_bytes(root / "run") == before  # results, model and store untouched


def test_checkpoints_of_other_data_are_not_resumed(run_copy):
    root, data, cfg = run_copy
    shutil.rmtree(root / "run" / "model" / "final")  # an interrupted training: checkpoints only
    write_rows(data, EDIT)
    res = cli("train", "--config", str(cfg))
    assert res.exit_code == 2 and "changed since the model" in res.stderr
    assert not (root / "run" / "model" / "final").exists()


def test_overwrite_retrains_on_the_new_data_and_keeps_the_old_run(run_copy):
    root, data, cfg = run_copy
    write_rows(data, EDIT)
    cfg = write_config(cfg, REL_OUT, REL_DATA, output={"overwrite": True})
    res = cli("train", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    from datablame.api import load_corpus

    new_fp = load_corpus(_cfg(cfg))[0].fingerprint()
    assert json.loads((root / "run" / "model" / "fingerprint.json").read_text())["data_fingerprint"] == new_fp
    (old,) = root.glob("run.old-*")
    assert json.loads((old / "model" / "fingerprint.json").read_text())["data_fingerprint"] != new_fp
    res = cli("attribute", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    out = json.loads((root / "run" / "attribution" / "results.json").read_text())
    assert out["data"]["fingerprint"] == new_fp == out["model"]["trained_on_data"]


def test_store_built_before_the_edit_is_refused(built, monkeypatch):
    """The model check comes first on the CLI; the store's own identity check (data hash) is
    shown here with the run's model handed in, as the bench runner does."""
    from datablame import api
    from datablame.models import load_model

    cfg = _api_cfg(built, monkeypatch)
    corpus = api.load_corpus(cfg)[0]
    edited = corpus.subset(range(len(corpus)))
    edited.rows[3] = type(corpus[3])(corpus[3].row_id, corpus[3].prompt, EDIT[3], {})
    loaded = load_model(cfg.model, path_override=str(built / "run" / "model" / "final"), seed=cfg.seed)
    assert api.prepare_inputs(cfg, corpus=corpus, loaded=loaded)[0].store is not None
    with pytest.raises(DatablameError, match="changed since `datablame index`"):
        api.prepare_inputs(cfg, corpus=edited, loaded=loaded)


def test_curvature_and_text_indices_are_rebuilt_for_new_data(built, tmp_path, caplog, monkeypatch):
    from datablame import api
    from datablame.curvature import factor_path, load_preconditioner
    from datablame.features.preconditioner import fit_preconditioner
    from datablame.features.text_index import build_text_indices
    from datablame.models import load_model

    cfg = _api_cfg(built, monkeypatch)
    corpus = api.load_corpus(cfg)[0]
    edited = corpus.subset(range(len(corpus)))
    edited.rows[3] = type(corpus[3])(corpus[3].row_id, corpus[3].prompt, EDIT[3], {})
    loaded = load_model(cfg.model, path_override=str(built / "run" / "model" / "final"), seed=cfg.seed)
    caplog.set_level(logging.INFO, logger="datablame")
    for c in (corpus, edited):
        inputs = api.prepare_inputs(cfg, corpus=c, loaded=loaded, use_store=False)[0]
        inputs.work_dir = tmp_path / "attribution"
        fit_preconditioner(inputs, "diagonal")
        assert load_preconditioner(factor_path(inputs.work_dir, "diagonal"))[1]["data"] == c.fingerprint()
    assert "fitted for another data (changed since); refitting" in caplog.text

    caplog.clear()
    build_text_indices(corpus, tmp_path / "text", embedding=False, progress=False)
    idx = build_text_indices(edited, tmp_path / "text", embedding=False, progress=False)
    assert "rebuilding the text indices" in caplog.text and "the data changed" in caplog.text
    assert idx.manifest["data_fingerprint"] == edited.fingerprint()
    saved = json.loads((tmp_path / "text" / "manifest.json").read_text())
    assert saved["data_fingerprint"] == edited.fingerprint()


def test_retraining_jobs_are_keyed_on_the_data_and_refuse_a_stale_run(run_copy):
    from datablame import api
    from datablame.data.corpus import Query
    from datablame.verify.common import retrain_context
    from datablame.verify.retrain import RetrainJob, job_key

    root, data, cfg_path = run_copy
    cfg = _cfg(cfg_path)
    corpus = api.load_corpus(cfg)[0]
    q = [Query("What is the capital of Country1?", " Rome.", "q1")]
    ctx = retrain_context(cfg, root / "run", corpus, q, generate=False)
    write_rows(data, EDIT)
    edited = api.load_corpus(cfg)[0]
    with pytest.raises(DatablameError, match="changed since the model"):
        retrain_context(cfg, root / "run", edited, q, generate=False)  # verify / lds on a stale run
    (root / "run" / "model" / "fingerprint.json").unlink()  # as if trained by an older datablame
    (root / "run" / "run.json").write_text(json.dumps({"name": "stale", "run_key": "x", "created": "y"}))
    ctx2 = retrain_context(cfg, root / "run", edited, q, generate=False)
    job = RetrainJob(0, removed=(1,))
    assert job_key(ctx, job) != job_key(ctx2, job)  # a cached job of the old data is never reused


def test_run_without_a_fingerprint_keeps_working_with_a_warning(run_copy, caplog):
    root, data, cfg = run_copy
    (root / "run" / "model" / "fingerprint.json").unlink()
    marker = json.loads((root / "run" / "run.json").read_text())
    marker.pop("data_fingerprint")
    (root / "run" / "run.json").write_text(json.dumps(marker))
    caplog.set_level(logging.INFO, logger="datablame")
    for command in ("train", "attribute"):
        res = cli(command, "--config", str(cfg))
        assert res.exit_code == 0, res.output
    assert caplog.text.count("records no data fingerprint") == 1  # warned once, not orphaned


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_corrupt_run_marker_is_one_line(run_copy, content):
    root, data, cfg = run_copy
    (root / "run" / "run.json").write_text(content)
    res = cli("train", "--config", str(cfg))
    assert res.exit_code == 2 and "Traceback" not in res.output
    first = res.stderr.strip().splitlines()[0]
    assert first.startswith("error: the run marker") and str(REL_OUT / "run.json") in first
    assert "fix:" in res.stderr
