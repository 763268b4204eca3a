"""MMLU-style multiple choice: prompt format, log-likelihood scoring by hand, and input errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MMLU_ROWS

from datablame.errors import DatablameError
from datablame.evaluate.mmlu import build_prompt, load_questions, score_model
from datablame.evaluate.mmlu_data import load_local
from datablame.evaluate.settings import BootstrapSettings, MMLUSettings
from datablame.evaluate.sources import EvalModel


def _hand_prompt(target: int, shots: list[int]) -> str:
    """The MMLU prompt written out by hand from the rows (subject "basic facts")."""
    def block(r):
        q, a, b, c, d, _ = MMLU_ROWS[r]
        return f"{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:"

    text = "The following are multiple choice questions (with answers) about basic facts.\n\n"
    for s in shots:
        text += block(s) + " " + MMLU_ROWS[s][5] + "\n\n"
    return text + block(target)


def _hand_loglik(model, tok, context: str, letter: str) -> float:
    """log P(" X" | context): one forward pass over context + " X", the continuation's tokens summed."""
    ctx = tok(context)["input_ids"]
    whole = tok(context + " " + letter)["input_ids"]
    assert whole[: len(ctx)] == ctx
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole)))


def test_prompt_is_the_mmlu_format(mmlu_file):
    qs = load_local(mmlu_file)["basic_facts"]
    assert build_prompt(qs[2], qs[:2]) == _hand_prompt(2, [0, 1])
    assert build_prompt(qs[0], []).endswith("about basic facts.\n\nWhat is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")


def test_three_questions_scored_as_by_hand(tiny_pair, mmlu_file):
    loaded = tiny_pair[0]
    test, dev, _ = load_questions(MMLUSettings(path=str(mmlu_file), k_shot=2))
    got = score_model(EvalModel("m", loaded), test, dev, 2, BootstrapSettings(n_boot=200))
    hand_correct = 0
    for i, row in enumerate(got["per_question"]):
        shots = [j for j in range(3) if j != i][:2]  # no dev set: the subject's other questions
        context = _hand_prompt(i, shots)
        hand = {x: _hand_loglik(loaded.model, loaded.tokenizer, context, x) for x in "ABCD"}
        assert row["loglikelihoods"] == pytest.approx(hand, abs=1e-4)
        assert row["predicted"] == max(hand, key=hand.get)
        hand_correct += max(hand, key=hand.get) == MMLU_ROWS[i][5]
    assert got["accuracy"]["mean"] == pytest.approx(hand_correct / 3)
    assert got["subjects"]["basic_facts"]["accuracy"]["n"] == 3
    lo, hi = got["accuracy"]["ci_low"], got["accuracy"]["ci_high"]
    assert 0 <= lo <= got["accuracy"]["mean"] <= hi <= 1


def test_dev_file_gives_the_shots(tmp_path, mmlu_file):
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"question": "Q?", "choices": ["w", "x", "y", "z"], "answer": 3,
                               "subject": "basic_facts"}) + "\n", encoding="utf-8")
    test, dev_qs, _ = load_questions(MMLUSettings(path=str(mmlu_file), dev_path=str(dev), k_shot=5))
    assert build_prompt(test["basic_facts"][0], dev_qs["basic_facts"][:5]).count("Answer:") == 2
    assert "Answer: D\n\nWhat is 1 + 1?" in build_prompt(test["basic_facts"][0], dev_qs["basic_facts"])


def test_header_csv_and_jsonl_layouts(tmp_path):
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("question,A,B,C,D,answer,subject\nQ1,a,b,c,d,b,algebra\n", encoding="utf-8")
    q = load_local(csv_path)["algebra"][0]
    assert (q.question, q.choices, q.answer) == ("Q1", ("a", "b", "c", "d"), 1)
    jl = tmp_path / "y.jsonl"
    jl.write_text(json.dumps({"question": "Q2", "choices": ["a", "b", "c", "d"], "answer": 2}) + "\n", encoding="utf-8")
    assert load_local(jl)["y"][0].answer == 2


@pytest.mark.parametrize(("text", "message"), [
    ("question,A,B,C,answer\nQ,a,b,c,A\n", "wrong columns"),
    ("Q,a,b,c,d,E\n", "answer 'E' is not one of A, B, C, D"),
    ("Q,a,b,c\n", "wrong columns"),
])
def test_bad_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad_test.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatablameError, match=message) as err:
        load_local(path)
    assert "A-D" in err.value.fix or "MMLU layout" in err.value.fix


def test_unknown_subject(mmlu_file):
    with pytest.raises(DatablameError, match="unknown MMLU subject 'astronomy'.*basic_facts"):
        load_questions(MMLUSettings(path=str(mmlu_file), subjects=["astronomy"]))


def test_hf_dataset_offline_names_the_local_option(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatablameError, match="not available offline") as err:
        load_questions(MMLUSettings(hf_dataset="no-such-org/no-such-mmlu"))
    assert "evaluate.mmlu.path" in err.value.fix
