"""One error path: file, decode, regex and flag errors end as one line naming the file or
field and the fix (exit 2, no traceback), an earlier good results.json stays byte-identical,
and a method that fails inside verify/lds fails the command after the others' numbers are
written."""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from pipeline_config import small_config
from typer.testing import CliRunner

from datablame.cli import app
from datablame.error_paths import as_datablame_error
from datablame.errors import DatablameError

runner = CliRunner()


@pytest.fixture(scope="module")
def attributed(tmp_path_factory):
    """A small trained run with a good attribution result (grad_cosine)."""
    from datablame import api

    cfg = small_config(tmp_path_factory.mktemp("error_paths") / "run")
    api.train(cfg)
    api.attribute(cfg, methods=["grad_cosine"], progress=False)
    return cfg


def _copy(cfg, tmp_path: Path, **edit) -> tuple[Path, Path]:
    """A private copy of the run and a config file for it (with `edit` applied to the raw config)."""
    out = tmp_path / "run"
    shutil.copytree(cfg.output.dir, out)
    raw = cfg.model_dump(mode="json")
    raw["output"]["dir"] = str(out)
    for section, values in edit.items():
        raw[section] = {**raw[section], **values}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, out


def _one_error_line(stderr: str) -> bool:
    """Exactly one `error: ...` line followed by a `fix: ...` line (progress bars aside)."""
    lines = stderr.replace("\r", "\n").splitlines()
    errs = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    return len(errs) == 1 and errs[0] + 1 < len(lines) and lines[errs[0] + 1].startswith("fix: ")


def _cli(*args: str):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res


# (case id, CLI args after --config, what stderr must name, config edits)
FLAG_AND_INPUT_CASES = [
    ("verify-k-0", ["verify", "--k", "0"], ["--k"], {}),
    ("verify-controls-0", ["verify", "--controls", "0"], ["--controls"], {}),
    ("verify-num-cpus-0", ["verify", "--num-cpus", "0"], ["--num-cpus"], {}),
    ("lds-subsets-1", ["lds", "--subsets", "1"], ["--subsets"], {}),
    ("lds-alpha-2", ["lds", "--alpha", "2"], ["--alpha"], {}),
    ("bad-module-regex", ["attribute", "--method", "grad_cosine"], ["attribution.modules.pattern"],
     {"attribution": {"modules": {"pattern": r"mlp\.(gate"}}}),
]


@pytest.mark.parametrize(("args", "names", "edit"), [c[1:] for c in FLAG_AND_INPUT_CASES],
                         ids=[c[0] for c in FLAG_AND_INPUT_CASES])
def test_bad_flags_and_inputs_name_the_field(attributed, tmp_path, args, names, edit):
    path, out = _copy(attributed, tmp_path, **edit)
    results = out / "attribution" / "results.json"
    before = results.read_bytes()
    res = _cli(args[0], "--config", path, *args[1:])
    assert res.exit_code == 2, res.output
    assert _one_error_line(res.stderr), res.stderr
    for name in names:
        assert name in res.stderr, (name, res.stderr)
    assert results.read_bytes() == before


def _damage(out: Path, name: str, content: bytes) -> Path:
    f = out / "attribution" / name
    f.write_bytes(content)
    return f


# (case id, file under <run>/attribution, damaged content)
DAMAGED_FILE_CASES = [
    ("results-not-json", "results.json", b"{not json"),
    ("results-not-utf8", "results.json", b'{"queries": "\xff\xfe"}'),
    ("results-not-a-result", "results.json", b"[1, 2]"),
    ("scores-empty", "scores.npz", b""),
    ("scores-not-a-zip", "scores.npz", b"PK\x03\x04 not really a zip"),
]


@pytest.mark.parametrize(("name", "content"), [c[1:] for c in DAMAGED_FILE_CASES], ids=[c[0] for c in DAMAGED_FILE_CASES])
def test_damaged_result_files_are_named(attributed, tmp_path, name, content):
    path, out = _copy(attributed, tmp_path)
    _damage(out, name, content)
    res = _cli("verify", "--config", path, "--k", "1", "--seeds", "0", "--serial")
    assert res.exit_code == 2, res.output
    assert name in res.stderr and "fix: " in res.stderr, res.stderr


def test_output_dir_under_a_file(attributed, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    path, _ = _copy(attributed, tmp_path, output={"dir": str(blocker / "run")})
    res = _cli("attribute", "--config", path, "--method", "grad_cosine")
    assert res.exit_code == 2, res.output
    assert "blocker" in res.stderr and "fix: " in res.stderr, res.stderr


@pytest.mark.parametrize("err", [
    PermissionError(errno.EACCES, "Permission denied", "/runs/x/attribution"),
    OSError(errno.EROFS, "Read-only file system", "/runs/x/attribution"),
], ids=["permission", "read-only"])
def test_unwritable_output_is_one_line(attributed, tmp_path, monkeypatch, err):
    """Root ignores chmod, so the OS error is raised where the run directory is prepared."""
    from datablame import inputs

    path, out = _copy(attributed, tmp_path)
    before = (out / "attribution" / "results.json").read_bytes()

    def refuse(*_a, **_k):
        raise err

    monkeypatch.setattr(inputs, "prepare_run_dir", refuse)
    res = _cli("attribute", "--config", path, "--method", "grad_cosine")
    assert res.exit_code == 2, res.output
    assert "/runs/x/attribution" in res.stderr and "output.dir" in res.stderr, res.stderr
    assert (out / "attribution" / "results.json").read_bytes() == before


def _raised(exc_type, *args):
    try:
        raise exc_type(*args)
    except exc_type as err:
        return err


def _json_error(path: Path):
    try:
        json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return err


def _eof_error(path: Path):
    import numpy as np

    try:
        np.load(path)
    except EOFError as err:
        return err


def _validation_error():
    from datablame.config import VerifyConfig

    try:
        VerifyConfig(controls=0)
    except Exception as err:  # noqa: BLE001 - pydantic's ValidationError
        return err


def test_every_mapped_error_names_what_is_wrong(tmp_path):
    bad_json = tmp_path / "state.json"
    bad_json.write_text("{oops")
    empty = tmp_path / "norms.npy"
    empty.write_bytes(b"")
    cases = [
        (_raised(PermissionError, errno.EACCES, "Permission denied", "/x/out"), ["permission denied", "/x/out"]),
        (_raised(OSError, errno.EROFS, "Read-only file system", "/ro/out"), ["read-only", "/ro/out"]),
        (_raised(OSError, errno.ENOSPC, "No space left on device", "/full"), ["no space", "/full"]),
        (_raised(NotADirectoryError, errno.ENOTDIR, "Not a directory", "/f/run"), ["not a directory", "/f/run"]),
        (_raised(FileNotFoundError, errno.ENOENT, "No such file", "/gone.jsonl"), ["/gone.jsonl", "does not exist"]),
        (_json_error(bad_json), [str(bad_json), "not valid JSON"]),
        (_eof_error(empty), [str(empty), "empty or truncated"]),
        (_raised(UnicodeDecodeError, "utf-8", b"\xff", 0, 1, "invalid start byte"), ["UTF-8"]),
        (_raised(yaml.YAMLError, "mapping values are not allowed here"), ["YAML"]),
        (_raised(re.error, "missing ), unterminated subpattern", "mlp.(gate"), ["mlp.(gate", "regex"]),
        (_validation_error(), ["controls"]),
    ]
    for err, needles in cases:
        mapped = as_datablame_error(err)
        assert isinstance(mapped, DatablameError) and mapped.fix, err
        text = f"{mapped.problem} {mapped.fix}"
        assert "\n" not in mapped.problem, text
        for needle in needles:
            assert needle.lower() in text.lower(), (needle, text)


def test_method_failure_in_scores_is_reported_not_swallowed(attributed, caplog):
    """method_scores keeps the other methods' numbers and returns the failure by name."""
    import logging

    from datablame import api
    from datablame.methods import REGISTRY
    from datablame.methods.base import Method
    from datablame.verify.common import method_scores, raise_if_methods_failed

    class Broken(Method):
        name, unit, cost = "broken_for_test", "-", "-"

        def score(self, inputs):
            raise RuntimeError("boom")

    REGISTRY[Broken.name] = Broken
    try:
        inputs = api.prepare_inputs(attributed)[0]
        with caplog.at_level(logging.ERROR, logger="datablame"):
            scores, _, errors = method_scores(attributed, inputs, ["grad_cosine", Broken.name])
    finally:
        REGISTRY.pop(Broken.name)
    assert "grad_cosine" in scores and "boom" in errors[Broken.name]
    assert "Traceback" not in caplog.text and Broken.name in caplog.text
    with pytest.raises(DatablameError, match=Broken.name):
        raise_if_methods_failed(errors, {"json": Path("lds.json")})
    raise_if_methods_failed({})  # nothing failed: nothing raised


def test_lds_with_a_failing_method_exits_non_zero_after_writing_the_others(attributed, tmp_path):
    """less needs optimizer.pt in every checkpoint; without it, it fails inside lds while
    grad_cosine still gets its LDS written, and the command exits 2 naming less."""
    path, out = _copy(attributed, tmp_path, lds={"epochs": 1})
    for f in (out / "model").glob("checkpoint-*/optimizer.pt"):
        f.unlink()
    res = _cli("lds", "--config", path, "--methods", "grad_cosine,less", "--subsets", "2", "--serial")
    assert res.exit_code == 2, res.output
    assert "less" in res.stderr and "optimizer.pt" in res.stderr, res.stderr
    data = json.loads((out / "lds" / "lds.json").read_text())
    rows = {r["method"]: r for r in data["table"]}
    assert "lds" in rows["grad_cosine"] and "error" in rows["less"]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x93NUMPY garbage"], ids=["empty", "bad-zip", "bad-npy"])
def test_damaged_feature_cache_is_recomputed_not_fatal(tmp_path, caplog, content):
    import logging

    from datablame.utils.safe_load import load_npz_cache

    f = tmp_path / "checkpoint-3.abc.npz"
    f.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="datablame"):
        assert load_npz_cache(f, ("rows",)) is None
    assert f.name in caplog.text
