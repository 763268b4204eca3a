import json

import numpy as np

from datablame.data.corpus import Corpus, Query, Row
from datablame.report import build_result, load_result, write_result


def _result():
    corpus = Corpus([Row(f"r{i}", f"Question: q{i} <b>\nAnswer:", f" a{i}", {"src": i}) for i in range(5)])
    scores = {"grad_cosine": np.array([[0.1, 0.9, -0.2, 0.5, 0.0]])}
    return build_result(
        version="0", config={"x": 1}, model_info={"source": "m", "fingerprint": "f" * 64},
        corpus=corpus, queries=[Query("P", "C", "q0")], generated=[False], scores=scores,
        methods=[{"name": "grad_cosine", "sign": "s", "unit": "u", "cost": "c"}], k=3,
    )


def test_ranking_order_and_full_row_text(tmp_path):
    res = _result()
    rows = res.queries[0].rankings["grad_cosine"]
    assert [r.row_id for r in rows] == ["r1", "r3", "r0"]
    assert rows[0].prompt.startswith("Question: q1") and rows[0].completion == " a1"
    assert rows[0].metadata == {"src": 1}
    paths = write_result(res, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["queries"][0]["rankings"]["grad_cosine"][0]["score"] == 0.9
    assert load_result(paths["json"]).queries[0].rankings["grad_cosine"][1].row_id == "r3"
    html = paths["html"].read_text()
    assert "&lt;b&gt;" in html and "<b>\n" not in html  # row text is escaped
    assert "| 1 | 0.9 | `r1` |" in paths["markdown"].read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
