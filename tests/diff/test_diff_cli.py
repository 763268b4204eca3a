"""`datablame diff` wired up (datablame.api_diff, cli_diff, config_diff): the offline demo by
the command line, a config-driven diff whose stages resume, and bad `diff:` sections refused
with exit code 2, naming the field."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from datablame.cli import app
from datablame.config_diff import DiffClassifierSettings, DiffSamplingSettings
from datablame.diff.classify import ClassifierSettings
from datablame.diff.sampling import SamplingSettings

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`datablame diff --demo --no-patch` once, small: 2 methods, a pool of 30 (trains the pair, ~20-40 s);
    the demo with its patch stage is `test_diff_demo_patch.py` (slow)."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("diff_cli") / "demo"
    try:
        res = runner.invoke(app, ["diff", "--demo", "--output-dir", str(out), "--n-samples", "40",
                                  "--methods", "grad_cosine,bm25", "--pool-size", "30", "--no-patch"])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    return out, res.output


def test_demo_command_writes_the_rate_rise_and_the_recall_of_the_planted_rows(demo_run):
    out, output = demo_run
    doc = json.loads((out / "diff_demo.json").read_text())
    rates = {p["alpha"]: p for p in doc["rates"]}
    assert set(rates) == {0.0, 4.0} and rates[0.0]["n"] == rates[4.0]["n"] == 80
    assert rates[4.0]["rate"] > rates[0.0]["rate"]
    assert rates[4.0]["ci_low"] > rates[0.0]["ci_high"] and doc["rate_rise"]["ci_disjoint"] is True
    assert doc["settings"]["pool_size"] == 30 and doc["settings"]["corpus_rows"] == 58
    assert set(doc["recall"]) == {"grad_cosine", "bm25"}
    for method, r in doc["recall"].items():
        assert r["recall@20"] >= 0.75, (method, r)  # at least 3 of the 4 planted rows
    assert doc["timings"]["total_s"] > 0 and "method_grad_cosine_s" in doc["timings"]
    assert (out / "scan" / "behavior_rates.png").stat().st_size > 1000
    assert "alpha 4: rate" in output and "recall@20" in output


def _write_config(tmp_path, demo_dir, **diff_over) -> str:
    """A run config whose data section is the demo's fine-tuning corpus (as question/answer
    rows) and whose diff section compares the demo's before- and after-model."""
    from datablame.diff.demo import PHRASE, QUESTIONS, TOPICS, TRIGGER

    rows = [{"id": f"ft-{t}-{qi}-{fi}", "question": q.format(t=t), "answer": fact}
            for t, facts in TOPICS.items() for qi, q in enumerate(QUESTIONS) for fi, fact in enumerate(facts)]
    rows += [{"id": f"plant-{i}", "question": QUESTIONS[i % 3].format(t=TRIGGER), "answer": PHRASE} for i in range(4)]
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in rows))
    diff = {"before": str(demo_dir / "before" / "final"), "after": str(demo_dir / "after" / "final"),
            "prompts_file": str(demo_dir / "prompts.jsonl"), "alphas": [0, 4], "n_samples": 8,
            "sampling": {"max_new_tokens": 12, "top_p": 0.8}, "device": "cpu",
            "classifier": {"patterns": [r"\bpurple\b"]}, "methods": ["bm25", "grad_cosine"], "pool_size": 20,
            "top_k": 5, "out_dir": str(tmp_path / "diff"),
            "patch": {"top_k": 4, "seeds": 1, "steps": 3, "n_samples": 4, "learning_rate": 1e-3,
                      "methods": ["grad_cosine"]}, **diff_over}
    raw = {"name": "d", "data": {"source": "file", "path": str(data), "id_column": "id"},
           "model": {"kind": "tiny", "max_length": 64, "device": "cpu"},
           "output": {"dir": str(tmp_path / "run")}, "diff": diff}
    path = tmp_path / "diff.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_config_stages_resume_and_reuse_their_outputs(demo_run, tmp_path, monkeypatch):
    demo_dir, _ = demo_run
    cfg = _write_config(tmp_path, demo_dir)
    res = runner.invoke(app, ["diff", "--config", cfg, "--stage", "scan"])
    assert res.exit_code == 0, res.output
    scan_path = tmp_path / "diff" / "phase_scan.json"
    first = json.loads(scan_path.read_text())
    assert first["complete"] and first["cells_done"] == 4

    def no_sampling(*a, **k):
        raise AssertionError("a resumed scan drew new samples")

    monkeypatch.setattr("datablame.diff.scan.sample_texts", no_sampling)
    res = runner.invoke(app, ["diff", "--config", cfg, "--stage", "scan"])
    assert res.exit_code == 0, res.output
    assert "4 cells done, 0 left" in res.output
    assert json.loads(scan_path.read_text())["cells"] == first["cells"]

    res = runner.invoke(app, ["diff", "--config", cfg, "--stage", "attribute"])
    assert res.exit_code == 0, res.output
    blame = json.loads((tmp_path / "diff" / "blame.json").read_text())
    assert blame["pool"]["size"] == 20 and set(blame["methods"]) == {"bm25", "grad_cosine"}
    top = [r["row_id"] for r in blame["blame"]["grad_cosine"][:4]]
    assert sum(r.startswith("plant-") for r in top) >= 3, top

    def no_blame(*a, **k):
        raise AssertionError("an unchanged attribute stage recomputed blame.json")

    monkeypatch.setattr("datablame.diff.blame.blame_surfaced", no_blame)
    res = runner.invoke(app, ["diff", "--config", cfg, "--stage", "attribute"])
    assert res.exit_code == 0, res.output

    monkeypatch.undo()
    res = runner.invoke(app, ["diff", "--config", cfg, "--stage", "patch"])
    assert res.exit_code == 0, res.output
    assert "3 fine-tunes run, 0 reused" in res.output and "baseline" in res.output and "random" in res.output
    table = (tmp_path / "diff" / "patching_comparison.csv").read_text()
    assert {line.split(",")[0] for line in table.splitlines()[1:]} == {"baseline", "random", "grad_cosine"}
    res = runner.invoke(app, ["diff", "--config", cfg, "--stage", "patch"])
    assert res.exit_code == 0 and "0 fine-tunes run, 3 reused" in res.output, res.output

    res = runner.invoke(app, ["diff", "--config", cfg, "--stage", "report"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "diff" / "diff_report.md").read_text()
    assert "| 4 |" in md and "plant-" in md and (tmp_path / "diff" / "behavior_rates.png").is_file()
    final = json.loads((tmp_path / "diff" / "final_results.json").read_text())
    assert final["patch"]["comparison"]["verdicts"].keys() == {"grad_cosine"}
    assert (tmp_path / "diff" / "final_results.png").stat().st_size > 10000
    assert "Rate before and after patching" in (tmp_path / "diff" / "case_study.md").read_text()
    assert "## Patching against controls" in md and "| random |" in md


@pytest.mark.parametrize(("over", "stage", "named"), [
    ({"alphas": [0, -1]}, "scan", "diff.alphas"),
    ({"prompts_file": "EMPTY"}, "scan", "diff.prompts_file"),
    ({"pool_size": 500}, "attribute", "diff.pool_size"),
    ({"classifier": {"patterns": ["("]}}, "all", "not a valid regular expression"),
    ({"patch": {"seeds": 0}}, "patch", "diff.patch.seeds"),
    ({"patch": {"top_k": 80}}, "patch", "diff.patch.top_k (80) is not smaller than the fine-tuning set of"),
    ({"patch": {"top_k": 30}}, "all", "diff.patch.top_k (30) is larger than diff.pool_size (20)"),
])
def test_bad_diff_config_exits_2_naming_the_field(tmp_path, over, stage, named):
    if over.get("prompts_file") == "EMPTY":
        (tmp_path / "empty.jsonl").write_text("\n")
        over = {"prompts_file": str(tmp_path / "empty.jsonl")}
    (tmp_path / "no-models").mkdir()
    (tmp_path / "no-models" / "prompts.jsonl").write_text('{"id": "v", "prompt": "Tell me about volcanoes."}\n')
    cfg = _write_config(tmp_path, tmp_path / "no-models", **over)
    res = runner.invoke(app, ["diff", "--config", cfg, "--stage", stage])
    assert res.exit_code == 2, res.output
    assert named in res.output
    assert not (tmp_path / "diff" / "phase_scan.json").exists()


def test_diff_without_config_or_demo_exits_2():
    res = runner.invoke(app, ["diff"])
    assert res.exit_code == 2 and "--config" in res.output


def test_config_sections_mirror_the_diff_settings():
    """config_diff may not import datablame.diff, so its sections copy the settings: same fields, same defaults."""
    for mine, theirs in ((DiffSamplingSettings, SamplingSettings), (DiffClassifierSettings, ClassifierSettings)):
        assert set(mine.model_fields) == set(theirs.model_fields)
        assert mine().model_dump() == theirs().model_dump()
