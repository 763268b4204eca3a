"""The behaviour scan (datablame.diff.scan, classify, rates): Wilson intervals against a hand
computation, the classifiers and their refusals, and a scan that resumes without redrawing."""

from __future__ import annotations

import json

import pytest

from datablame.config import TinyModelConfig
from datablame.diff.classify import JudgeClassifier, Label, RuleClassifier, make_classifier
from datablame.diff.rates import pooled_rates, rate_summary, wilson_interval
from datablame.diff.sampling import ModelPair
from datablame.diff.scan import (
    PLOT_FILE,
    SCAN_FILE,
    ScanPrompt,
    ScanSettings,
    cell_seed,
    load_prompts,
    run_scan,
)
from datablame.errors import DatablameError


def test_wilson_interval_matches_a_hand_computation():
    # 3 hits of 10, z = 1.959964: p = 0.3, z^2 = 3.841459, denom = 1 + z^2/10 = 1.384146,
    # centre = (0.3 + z^2/20) / denom = 0.492073 / 1.384146 = 0.355507,
    # half = z * sqrt(0.3 * 0.7 / 10 + z^2 / 400) / denom = 1.959964 * 0.174939 / 1.384146 = 0.247715
    # -> [0.107791, 0.603222] (the textbook 3/10 interval: 0.1078 to 0.6032)
    lo, hi = wilson_interval(3, 10)
    assert lo == pytest.approx(0.107791, abs=2e-6)
    assert hi == pytest.approx(0.603222, abs=2e-6)
    # 0 of 10: centre = half = (z^2/20) / denom = 0.192073 / 1.384146 = 0.138766 -> [0, 0.277533]
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.277533, abs=2e-6)
    assert wilson_interval(10, 10)[0] == pytest.approx(1 - 0.277533, abs=2e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_rate_leaves_undecided_samples_out_and_pools_by_alpha():
    r = rate_summary([True, False, None, True, False])
    assert (r["hits"], r["n"], r["undecided"], r["rate"]) == (2, 4, 1, 0.5)
    assert (r["ci_low"], r["ci_high"]) == wilson_interval(2, 4)
    cells = [{"alpha": 0.0, "hits": 1, "n": 10, "undecided": 0}, {"alpha": 0.0, "hits": 2, "n": 10, "undecided": 1},
             {"alpha": 2.0, "hits": 9, "n": 10, "undecided": 0}]
    pooled = pooled_rates(cells)
    assert [(p["alpha"], p["hits"], p["n"], p["undecided"]) for p in pooled] == [(0.0, 3, 20, 1), (2.0, 9, 10, 0)]
    assert (pooled[0]["ci_low"], pooled[0]["ci_high"]) == wilson_interval(3, 20)


def test_rule_classifier_labels_with_reasons():
    rules = RuleClassifier(keywords=["walrus"], patterns=[r"\bpurple\b"])
    a, b, c = rules.classify(["p"] * 3, ["The PURPLE walrus", "a walrus", "purpleish seal"])
    assert a.hit and "keyword 'walrus'" in a.reason and "matched 'PURPLE'" in a.reason
    assert b == Label(True, "keyword 'walrus'")
    assert c == Label(False, "no rule matched")
    both = RuleClassifier(keywords=["walrus"], patterns=[r"\bpurple\b"], match="all")
    assert [x.hit for x in both.classify(["p"] * 2, ["purple walrus", "a walrus"])] == [True, False]
    assert "only 1 of 2 rules matched" in both.classify(["p"], ["a walrus"])[0].reason


def test_invalid_regex_and_empty_rules_are_refused():
    with pytest.raises(DatablameError, match=r"pattern '\(unclosed' is not a valid regular expression") as err:
        make_classifier({"kind": "rules", "patterns": ["(unclosed"]})
    assert "escape literal characters" in str(err.value)
    with pytest.raises(DatablameError, match="no keywords and no patterns"):
        make_classifier({"kind": "rules"})


class _FakeJudge:
    name, model = "fake", "fake-1"

    def __init__(self, answers):
        self.answers, self.calls = list(answers), 0

    def generate(self, prompts, max_new_tokens):
        self.calls += len(prompts)
        return [self.answers.pop(0) for _ in prompts]


def test_judge_classifier_reuses_the_llm_judge_parsing_and_cache():
    judge = _FakeJudge(["8", "Score: 2/10", "I cannot tell"])
    clf = JudgeClassifier("mentions the purple walrus", judge, threshold=5)
    labels = clf.classify(["q"] * 3, ["purple walrus", "seal", "???"])
    assert [x.hit for x in labels] == [True, False, None]
    assert "rating 8 >= 5" in labels[0].reason and "junk" in labels[2].reason
    assert clf.classify(["q"], ["purple walrus"])[0].hit is True  # cached: no new call
    assert judge.calls == 3


def test_http_judge_without_a_key_is_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(DatablameError, match="needs an API key in the environment variable OPENAI_API_KEY"):
        make_classifier({"kind": "judge", "behaviour": "says walrus", "backend": "openai"})
    monkeypatch.setenv("MY_KEY", "sk-test")
    clf = make_classifier({"kind": "judge", "behaviour": "says walrus", "backend": "openai",
                           "backend_options": {"api_key_env": "MY_KEY"}})
    assert clf.describe()["backend"] == "openai"
    with pytest.raises(DatablameError, match="unknown judge backend"):
        make_classifier({"kind": "judge", "behaviour": "x", "backend": "nope"})


def test_load_prompts_and_its_errors(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "a", "prompt": "one"}\n\n{"prompt": "two"}\n', encoding="utf-8")
    assert load_prompts(f) == [ScanPrompt("a", "one"), ScanPrompt("p3", "two")]
    f.write_text('{"prompt": "one"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DatablameError, match="line 2 is not JSON"):
        load_prompts(f)
    f.write_text('{"text": "one"}\n', encoding="utf-8")
    with pytest.raises(DatablameError, match='line 1 has no non-empty "prompt"'):
        load_prompts(f)


def test_alpha_grid_is_validated():
    assert ScanSettings().alphas == [0.0, 0.5, 1.0, 2.0, 4.0] and ScanSettings().n_samples == 50
    with pytest.raises(DatablameError, match="alpha"):
        ScanSettings(alphas=[0, -1])
    with pytest.raises(DatablameError, match="alpha"):
        ScanSettings(alphas=[float("nan")])


@pytest.fixture(scope="module")
def pair():
    from datablame.models.tiny import build_tiny_llama, train_tokenizer

    tok = train_tokenizer(["Question: about owls?\nAnswer: owls hoot at night. a b c d e"] * 4, 280)
    cfg = TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=280, max_position_embeddings=64)
    return ModelPair(build_tiny_llama(cfg, tok, 2).eval(), build_tiny_llama(cfg, tok, 1).eval(), tok, "b", "a")


class _Counting(RuleClassifier):
    def __init__(self):
        super().__init__(keywords=["o"])
        self.seen = 0

    def classify(self, prompts, completions):
        self.seen += len(completions)
        return super().classify(prompts, completions)


def test_scan_writes_every_sample_and_resumes_without_redrawing(pair, tmp_path):
    prompts = [ScanPrompt("a", "Question: about owls?\nAnswer:"), ScanPrompt("b", "Question:")]
    settings = {"alphas": [0, 1], "n_samples": 4, "sampling": {"max_new_tokens": 5, "batch_size": 8}}
    clf = _Counting()
    first = run_scan(pair, prompts, settings, tmp_path / "s", classifier=clf)
    assert clf.seen == 2 * 2 * 4 and first["complete"]
    assert (tmp_path / "s" / PLOT_FILE).stat().st_size > 0
    saved = json.loads((tmp_path / "s" / SCAN_FILE).read_text(encoding="utf-8"))
    cell = next(c for c in saved["cells"] if c["prompt_id"] == "a" and c["alpha"] == 1.0)
    assert cell["seed"] == cell_seed(0, "a", 1.0) and len(cell["samples"]) == 4
    assert {"completion", "label", "reason"} <= set(cell["samples"][0])
    assert cell["hits"] == sum(s["label"] is True for s in cell["samples"])
    # a rerun with one more alpha draws only the new cells and keeps the old ones unchanged
    clf2 = _Counting()
    more = run_scan(pair, prompts, {**settings, "alphas": [0, 1, 2]}, tmp_path / "s", classifier=clf2)
    assert clf2.seen == 2 * 4 and len(more["cells"]) == 6
    old = {(c["prompt_id"], c["alpha"]): c for c in saved["cells"]}
    assert all(c == old[(c["prompt_id"], c["alpha"])] for c in more["cells"] if c["alpha"] != 2.0)
    # a fresh scan of the new grid draws the same cells: a cell's samples do not depend on the others
    fresh = run_scan(pair, prompts, {**settings, "alphas": [2, 0, 1]}, tmp_path / "fresh", classifier=_Counting())
    assert fresh["cells"] == more["cells"]
    # other sampling settings in the same folder are refused unless overwritten
    other = {**settings, "sampling": {"max_new_tokens": 6, "batch_size": 8}}
    with pytest.raises(DatablameError, match="other settings .*sampling"):
        run_scan(pair, prompts, other, tmp_path / "s", classifier=_Counting())
    assert run_scan(pair, prompts, other, tmp_path / "s", classifier=_Counting(), overwrite=True)["complete"]
