from __future__ import annotations

import pytest
from data_rows import write_jsonl
from pydantic import ValidationError

from datablame.config import CleaningConfig
from datablame.data import build_corpus
from datablame.data.build import content_id
from datablame.data.clean import clean_examples, normalize_text
from datablame.data.templates import QA_PROMPT, render
from datablame.errors import DatablameError

# -- templates ---------------------------------------------------------------------------


def test_qa_template():
    assert QA_PROMPT == "Question: {input}\nAnswer:"
    assert render("qa", {"input": "Why?", "output": "Because."}) == (
        "Question: Why?\nAnswer:", " Because.")


def test_instruction_template_with_and_without_input():
    p, c = render("instruction", {"instruction": "Add.", "input": "2 and 2", "output": "4"})
    assert p == "### Instruction:\nAdd.\n\n### Input:\n2 and 2\n\n### Response:\n" and c == "4"
    p, c = render("instruction", {"instruction": "Say hi.", "input": "", "output": "hi"})
    assert p == "### Instruction:\nSay hi.\n\n### Response:\n" and c == "hi"
    assert "### Input" not in p


def test_plain_template():
    assert render("plain", {"text": "Once upon a time."}) == ("", "Once upon a time.")


# -- cleaning ----------------------------------------------------------------------------


def test_normalize_text():
    cfg = CleaningConfig()
    assert normalize_text("ﬁne  ＡＢＣ\u00a0①", cfg) == "fine ABC 1"
    assert normalize_text("  a \t b  \r\n\r\n\r\n\n c \n", cfg) == "a b\n\nc"
    off = CleaningConfig(normalize_unicode=False, collapse_whitespace=False)
    assert normalize_text(" ﬁ  x ", off) == " ﬁ  x "


def test_clean_counts():
    ex = [
        {"input": "Q1", "output": "A1"},
        {"input": "  Q1 ", "output": "A1\t"},       # duplicate after whitespace collapse
        {"input": "Ｑ1", "output": "A1"},           # duplicate after NFKC
        {"input": "   ", "output": "A2"},          # empty input
        {"input": "Q3", "output": ""},             # empty output
        {"input": "Q4", "output": "A4"},
    ]
    kept, report = clean_examples(ex, "qa", CleaningConfig())
    assert report == {"loaded": 6, "dropped_empty": 2, "dropped_duplicates": 2, "kept": 2}
    assert [k.index for k in kept] == [0, 5]
    assert kept[0].prompt == "Question: Q1\nAnswer:" and kept[0].completion == " A1"

    _, report = clean_examples(ex, "qa", CleaningConfig(drop_duplicates=False, drop_empty=False))
    assert report == {"loaded": 6, "dropped_empty": 0, "dropped_duplicates": 0, "kept": 6}
    _, report = clean_examples(ex, "qa", CleaningConfig(normalize_unicode=False))
    assert report["dropped_duplicates"] == 1  # the full-width Q1 now differs


def test_instruction_empty_input_is_not_dropped():
    ex = [{"instruction": "Say hi.", "input": "", "output": "hi"}]
    kept, report = clean_examples(ex, "instruction", CleaningConfig())
    assert report["kept"] == 1 and "### Input" not in kept[0].prompt


# -- build_corpus ------------------------------------------------------------------------


def test_build_qa(tmp_path, make_cfg, rows):
    rows.append({"question": "What is 2+2? ", "answer": " 4", "id": "z", "topic": "dup"})
    rows.append({"question": "", "answer": "x", "id": "y", "topic": "empty"})
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    corpus = build_corpus(make_cfg(p))
    assert len(corpus) == 3
    assert corpus.report == {"loaded": 5, "dropped_empty": 1, "dropped_duplicates": 1, "kept": 3}
    r = corpus[1]
    assert (r.prompt, r.completion) == ("Question: Capital of France?\nAnswer:", " Paris")
    assert r.row_id == content_id(r.prompt, r.completion) and r.row_id.startswith("r-")
    assert len(r.row_id) == 14 and r.metadata == {}


def test_ids_stable_across_runs_and_files(tmp_path, make_cfg, rows):
    a = build_corpus(make_cfg(write_jsonl(tmp_path / "a.jsonl", rows)))
    b = build_corpus(make_cfg(write_jsonl(tmp_path / "b.jsonl", rows[::-1])))
    assert a.row_ids == build_corpus(make_cfg(tmp_path / "a.jsonl")).row_ids
    assert sorted(a.row_ids) == sorted(b.row_ids)
    assert a.fingerprint() == build_corpus(make_cfg(tmp_path / "a.jsonl")).fingerprint()


def test_hash_ids_unique_when_duplicates_kept(tmp_path, make_cfg, rows):
    p = write_jsonl(tmp_path / "d.jsonl", rows + rows[:1])
    corpus = build_corpus(make_cfg(p, cleaning={"drop_duplicates": False}))
    assert len(set(corpus.row_ids)) == 4 and corpus.row_ids[3] == corpus.row_ids[0] + "-1"


def test_id_column_and_metadata(tmp_path, make_cfg, rows):
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    corpus = build_corpus(make_cfg(p, id_column="id", metadata_columns=["topic", "id"]))
    assert corpus.row_ids == ["a", "b", "c"]
    assert corpus[1].metadata == {"topic": "geo", "id": "b"}


def test_id_column_duplicates_error(tmp_path, make_cfg, rows):
    rows[2]["id"] = "a"
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatablameError, match="'a'") as e:
        build_corpus(make_cfg(p, id_column="id"))
    assert "data.id_column" in str(e.value)


def test_num_samples(tmp_path, make_cfg, rows):
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": "", "answer": "x"}] + rows)
    corpus = build_corpus(make_cfg(p, num_samples=2))
    assert [r.completion for r in corpus] == [" 4", " Paris"]
    assert corpus.report["dropped_num_samples"] == 1 and corpus.report["kept"] == 2
    with pytest.raises(ValidationError, match="num_samples"):  # refused when the config is read
        build_corpus(make_cfg(p, num_samples=0))


def test_instruction_and_plain_build(tmp_path, make_cfg):
    recs = [{"instruction": "Add.", "input": "2 and 2", "output": "4", "text": "Some text."},
            {"instruction": "Greet.", "input": None, "output": "Hello", "text": "More text."}]
    p = write_jsonl(tmp_path / "d.jsonl", recs)
    c = build_corpus(make_cfg(p, template="instruction", instruction_column="instruction",
                              input_column="input", output_column="output"))
    assert c[0].prompt.startswith("### Instruction:\nAdd.\n\n### Input:\n2 and 2")
    assert c[1].prompt == "### Instruction:\nGreet.\n\n### Response:\n" and c[1].completion == "Hello"
    c = build_corpus(make_cfg(p, template="plain"))
    assert [(r.prompt, r.completion) for r in c] == [("", "Some text."), ("", "More text.")]
    with pytest.raises(DatablameError, match="data.instruction_column"):
        build_corpus(make_cfg(p, template="instruction", input_column="input",
                              output_column="output"))


def test_other_formats_build(tmp_path, make_cfg, rows):
    import pandas as pd
    from datasets import Dataset

    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    ref = build_corpus(make_cfg(write_jsonl(tmp_path / "d.jsonl", rows))).row_ids
    for path in ("d.csv", "d.parquet", "ds"):
        assert build_corpus(make_cfg(tmp_path / path)).row_ids == ref


def test_unknown_input_column(tmp_path, make_cfg, rows):
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatablameError, match="'prompt'") as e:
        build_corpus(make_cfg(p, input_column="prompt"))
    msg = str(e.value)
    assert "data.input_column" in msg and "'question'" in msg and "'answer'" in msg


def test_unknown_output_and_metadata_column(tmp_path, make_cfg, rows):
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatablameError, match="data.output_column"):
        build_corpus(make_cfg(p, output_column="Output"))
    with pytest.raises(DatablameError, match="'source'") as e:
        build_corpus(make_cfg(p, metadata_columns=["topic", "source"]))
    assert "data.metadata_columns" in str(e.value) and "'topic'" in str(e.value)
    with pytest.raises(DatablameError, match="data.id_column"):
        build_corpus(make_cfg(p, id_column="uid"))


def test_empty_after_cleaning(tmp_path, make_cfg):
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": " ", "answer": "x"},
                                           {"question": "q", "answer": "\t"}])
    with pytest.raises(DatablameError, match="no rows left") as e:
        build_corpus(make_cfg(p))
    msg = str(e.value)
    assert "loaded 2" in msg and "dropped 2" in msg and "drop_empty" in msg


def test_missing_file_via_build(tmp_path, make_cfg):
    with pytest.raises(DatablameError, match="data.path"):
        build_corpus(make_cfg(tmp_path / "missing.jsonl"))


def test_planted_source():
    from datablame.config import DataConfig
    from datablame.data import make_planted

    cfg = DataConfig(source="planted", planted={"n_entities": 5, "n_facts": 2})
    assert build_corpus(cfg).fingerprint() == make_planted(cfg.planted).corpus.fingerprint()

