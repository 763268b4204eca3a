"""`output.overwrite: true` never moves the data, the current or home directory, or a folder
that is not a datablame run; a rerun of `attribute` keeps the previous results (history);
output files and folders respect the umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from file_run import cli, tree_bytes, write_config, write_rows

from datablame.report.history import RESULT_FILES, publish_results
from datablame.utils.io import atomic_write_json, make_temp_dir


def _fake_run(d: Path) -> Path:
    """A folder that looks like an earlier run with other settings (a move would be due)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps({"name": "old", "run_key": "0" * 16, "created": "2020-01-01T00:00:00+00:00"}))
    (d / "attribution").mkdir(exist_ok=True)
    (d / "attribution" / "results.json").write_text('{"earlier": "good result"}\n')
    return d


def _case_data_dir(tmp: Path):
    out = _fake_run(tmp / "datadir")
    data = write_rows(out / "data.jsonl")
    return out, data, str(out), "contains data.path"


def _case_cwd(tmp: Path):
    out = _fake_run(tmp / "cwdrun")
    os.chdir(out)
    return out, write_rows(tmp / "data.jsonl"), ".", "is the current directory"


def _case_parent_of_cwd(tmp: Path):
    out = _fake_run(tmp / "parent")
    (out / "sub").mkdir()
    os.chdir(out / "sub")
    return out, write_rows(tmp / "data.jsonl"), str(out), "contains the current directory"


def _case_home(tmp: Path):
    out = _fake_run(tmp / "home")
    os.environ["HOME"] = str(out)
    return out, write_rows(tmp / "data.jsonl"), str(out), "is your home directory"


def _case_not_a_run(tmp: Path):
    out = tmp / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("precious\n")
    return out, write_rows(tmp / "data.jsonl"), str(out), "holds no datablame run"


def _case_root(tmp: Path):
    return None, write_rows(tmp / "data.jsonl"), "/", "contains the current directory"


CASES = {"data dir": _case_data_dir, "cwd": _case_cwd, "parent of cwd": _case_parent_of_cwd,
         "home": _case_home, "non-run dir": _case_not_a_run, "root": _case_root}


@pytest.mark.parametrize("case", list(CASES))
def test_overwrite_refuses_to_move(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", os.environ.get("HOME", str(tmp_path)))  # restored after the test
    out, data, out_arg, why = CASES[case](tmp_path)
    cfg = write_config(tmp_path / "run.yaml", Path(out_arg), data, output={"overwrite": True})
    before = tree_bytes(out) if out is not None else None
    res = cli("train", "--config", str(cfg))
    assert res.exit_code == 2, res.output
    assert f"output.dir {out_arg}" in res.stderr or f"directory {out_arg} " in res.stderr, res.stderr
    assert why in res.stderr and "Traceback" not in res.output
    if out is not None:
        assert out.is_dir() and tree_bytes(out) == before  # not moved, not touched
        assert not list(out.parent.glob(f"{out.name}.old-*"))


def test_overwrite_still_moves_an_ordinary_run_aside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _fake_run(tmp_path / "runs" / "r")
    cfg = write_config(tmp_path / "run.yaml", out, write_rows(tmp_path / "data.jsonl"),
                       output={"overwrite": True})
    from datablame.config import load_config
    from datablame.runs import prepare_run_dir

    assert prepare_run_dir(load_config(cfg)) == out
    (old,) = out.parent.glob("r.old-*")
    assert (old / "attribution" / "results.json").read_text() == '{"earlier": "good result"}\n'


# --- results history ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    cfg = write_config(root / "run.yaml", root / "run", write_rows(root / "data.jsonl"))
    res = cli("train", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    return root, cfg


def _results(att: Path) -> dict[str, bytes]:
    return {n: (att / n).read_bytes() for n in RESULT_FILES if (att / n).is_file()}


def _slots(att: Path) -> set[Path]:
    return set((att / "history").iterdir()) if (att / "history").is_dir() else set()


def test_rerun_keeps_the_previous_results(trained):
    root, cfg = trained
    att = root / "run" / "attribution"
    assert cli("attribute", "--config", str(cfg)).exit_code == 0
    first, earlier = _results(att), _slots(att)
    res = cli("attribute", "--config", str(cfg), "--method", "grad_dot,grad_cosine")
    assert res.exit_code == 0, res.output
    (slot,) = _slots(att) - earlier
    assert _results(slot) == first  # byte-identical, under a timestamped name
    assert "previous_results" in res.output and str(slot) in res.output
    second = _results(att)
    assert "comparison.json" in second and second["results.json"] != first["results.json"]
    assert cli("attribute", "--config", str(cfg)).exit_code == 0  # one method again
    assert "comparison.json" not in _results(att)  # the old comparison went with its result
    assert any(_results(s) == second for s in (att / "history").iterdir())
    assert not list(att.glob(".new-results-*"))


def test_a_failed_write_keeps_the_last_good_results(trained, monkeypatch):
    root, cfg_path = trained
    from datablame import api
    from datablame.config import load_config

    att = root / "run" / "attribution"
    assert cli("attribute", "--config", str(cfg_path)).exit_code == 0
    before, history = _results(att), tree_bytes(att / "history")

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("datablame.report.compare.write_comparison", broken)
    with pytest.raises(OSError, match="No space"):
        api.attribute(load_config(cfg_path), methods=["grad_dot", "grad_cosine"], progress=False)
    assert _results(att) == before and tree_bytes(att / "history") == history
    assert not list(att.glob(".new-results-*"))


def test_results_record_where_they_came_from(trained):
    root, cfg = trained
    assert cli("attribute", "--config", str(cfg)).exit_code == 0
    res = json.loads((root / "run" / "attribution" / "results.json").read_text())
    trained_on = json.loads((root / "run" / "model" / "fingerprint.json").read_text())["data_fingerprint"]
    assert res["data"]["fingerprint"] == trained_on == res["model"]["trained_on_data"]
    assert len(res["model"]["fingerprint"]) == 64 and res["data"]["store"] is None  # no store built


# --- umask ------------------------------------------------------------------------------

@pytest.mark.parametrize(("umask", "fmode", "dmode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_outputs_respect_the_umask(umask, fmode, dmode, tmp_path, trained):
    old = os.umask(umask)
    try:
        f = atomic_write_json(tmp_path / "a.json", {"x": 1})
        d = make_temp_dir(tmp_path, prefix="d")
        out = tmp_path / "att"
        publish_results(out, lambda s: {"json": atomic_write_json(s / "results.json", {})})
        publish_results(out, lambda s: {"json": atomic_write_json(s / "results.json", {"again": 1})})
        root, cfg = trained
        assert cli("attribute", "--config", str(cfg)).exit_code == 0
    finally:
        os.umask(old)
    (slot,) = (out / "history").iterdir()
    att = root / "run" / "attribution"
    for path in (f, out / "results.json", slot / "results.json", att / "results.json", att / "scores.npz"):
        assert stat.S_IMODE(path.stat().st_mode) == fmode, path
    for path in (d, slot):
        assert stat.S_IMODE(path.stat().st_mode) == dmode, path
