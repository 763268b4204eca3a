"""`datablame verify` output: with one seed the table says why the interval and p-value are
missing, and piped output carries full tables, not ones cut at 80 columns (issue 15 item 6)."""

from __future__ import annotations

import os

from typer.testing import CliRunner

from datablame.cli import app


def test_one_seed_says_why_and_the_table_is_not_cut(verify_run, tmp_path):
    cfg, _ = verify_run
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    args = ["verify", "--config", str(path), "--methods", "grad_cosine", "--queries", "fact-00", "--k", "3",
            "--seeds", "0", "--controls", "1", "--serial"]
    before = os.environ.get("COLUMNS")
    res = CliRunner().invoke(app, args)  # stdout is not a terminal here, as when piped
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "need >= 2 seeds (verify.seeds" in text
    assert "…" not in res.output, "a piped table must not be cut to 80 columns"
    assert "grad_cosine" in res.output
    assert max(len(line) for line in res.output.splitlines()) > 80  # laid out wider than a terminal
    assert os.environ.get("COLUMNS") == before  # the wide setting lasts only for the command
    res = CliRunner().invoke(app, [*args[:-5], "--seeds", "0,1", "--controls", "1", "--serial"])
    assert res.exit_code == 0, res.output
    assert "need >= 2 seeds" not in res.output
