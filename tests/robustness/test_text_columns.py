"""A number, bool, list or object in a text column is refused (never turned into its Python
repr), naming the column, the number of such rows and the first one; nulls count as empty
and their rows are dropped with a warning; integer ids are accepted as their decimal text."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import yaml
from file_run import cli, raw_config, write_rows

from datablame.config import DataConfig
from datablame.data import build_corpus
from datablame.errors import DatablameError

GOOD_ROWS = [{"id": f"r{i}", "question": f"Question {i}?", "answer": f"Answer {i}."} for i in range(6)]


def rows_with(column: str, values: dict[int, object], base=GOOD_ROWS) -> list[dict]:
    rows = [dict(r) for r in base]
    for i, v in values.items():
        rows[i][column] = v
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path, rows):
    pd.DataFrame(rows).to_parquet(path)
    return path


# (column, {row index: value}, type words the message must name)
BAD = [
    ("answer", {2: 42}, "number"),
    ("answer", {1: 3.5, 4: 7}, "number"),
    ("answer", {3: True}, "bool"),
    ("question", {0: ["a", "b"]}, "list"),
    ("question", {5: {"nested": "object"}}, "object"),
    ("answer", {2: [1, 2], 3: {"a": 1}}, "list/object"),
]


@pytest.mark.parametrize("column,values,kind", BAD, ids=[f"{c}-{k}-{len(v)}" for c, v, k in BAD])
def test_jsonl_non_text_values_are_refused(tmp_path, column, values, kind):
    p = write_jsonl(tmp_path / "d.jsonl", rows_with(column, values))
    with pytest.raises(DatablameError) as err:
        build_corpus(DataConfig(path=str(p)))
    msg = err.value.problem
    key = "data.input_column" if column == "question" else "data.output_column"
    first = min(values)
    assert f"column {column!r} ({key})" in msg
    assert f"{len(values)} of 6 rows" in msg and kind in msg
    assert f"row {first + 1} (counting from 1)" in msg
    assert "convert column" in err.value.fix


@pytest.mark.parametrize("column,values,kind", [
    ("answer", {1: 42}, "number"),  # an int column among strings -> object column of mixed values
    ("question", {2: ["x", "y"]}, "list"),
    ("answer", {0: {"k": "v"}}, "object"),
    ("answer", {4: b"raw bytes"}, "bytes"),
])
def test_parquet_non_text_values_are_refused(tmp_path, column, values, kind):
    rows = rows_with(column, values)
    if kind == "list":  # parquet columns have one type: make the whole column lists
        rows = [{**r, column: [r[column]] if not isinstance(r[column], list) else r[column]} for r in rows]
    elif kind in ("number", "object", "bytes"):  # ditto: the whole column of that type
        filler = {"number": 1, "object": {"k": "w"}, "bytes": b"b"}[kind]
        rows = [{**r, column: values.get(i, filler)} for i, r in enumerate(rows)]
    p = write_parquet(tmp_path / "d.parquet", rows)
    with pytest.raises(DatablameError) as err:
        build_corpus(DataConfig(path=str(p)))
    assert f"column {column!r}" in err.value.problem and kind in err.value.problem
    assert "6 of 6 rows" in err.value.problem and "row 1 (counting from 1)" in err.value.problem


def test_parquet_numeric_column_with_nan_is_refused(tmp_path):
    p = write_parquet(tmp_path / "d.parquet", [{**r, "answer": float(i) if i != 2 else float("nan")}
                                               for i, r in enumerate(GOOD_ROWS)])
    with pytest.raises(DatablameError, match=r"column 'answer' .* 5 of 6 rows hold number values"):
        build_corpus(DataConfig(path=str(p)))


def test_plain_and_instruction_templates_check_their_columns(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"text": "one"}, {"text": 2}])
    with pytest.raises(DatablameError, match=r"column 'text' \(data.text_column\).*row 2"):
        build_corpus(DataConfig(path=str(p), template="plain"))
    rows = [{"ins": "Do it", "question": "", "answer": "ok"}, {"ins": ["Do", "it"], "question": "", "answer": "ok"}]
    p = write_jsonl(tmp_path / "i.jsonl", rows)
    with pytest.raises(DatablameError, match=r"column 'ins' \(data.instruction_column\)"):
        build_corpus(DataConfig(path=str(p), template="instruction", instruction_column="ins"))
    rows = [{"ins": "Do it", "question": 5, "answer": "ok"}]  # the optional input column too
    p = write_jsonl(tmp_path / "i2.jsonl", rows)
    with pytest.raises(DatablameError, match=r"column 'question' \(data.input_column\)"):
        build_corpus(DataConfig(path=str(p), template="instruction", instruction_column="ins"))


def test_csv_cells_are_text(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("question,answer\nWhat is 6*7?,42\nIs it?,true\nList?,\"[1, 2]\"\n", encoding="utf-8")
    corpus = build_corpus(DataConfig(path=str(p)))
    assert [r.completion for r in corpus] == [" 42", " true", " [1, 2]"]


def test_hf_dataset_dir_non_text_values_are_refused(tmp_path):
    import datasets

    datasets.Dataset.from_list(rows_with("answer", {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6})).save_to_disk(
        str(tmp_path / "ds"))
    with pytest.raises(DatablameError, match=r"column 'answer' .* 6 of 6 rows hold number values"):
        build_corpus(DataConfig(path=str(tmp_path / "ds")))


@pytest.mark.parametrize("write", [write_jsonl, write_parquet], ids=["jsonl", "parquet"])
def test_nulls_are_empty_dropped_and_counted(tmp_path, caplog, write):
    rows = rows_with("answer", {1: None, 4: None})
    p = write(tmp_path / ("d.jsonl" if write is write_jsonl else "d.parquet"), rows)
    with caplog.at_level(logging.WARNING, logger="datablame"):
        corpus = build_corpus(DataConfig(path=str(p)))
    assert len(corpus) == 4 and corpus.report["dropped_empty"] == 2
    assert any("2 of 6 rows" in r.getMessage() and "'answer'" in r.getMessage() and "dropped" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_integer_ids_are_their_decimal_text_and_other_ids_are_refused(tmp_path):
    rows = [{**r, "id": 100 + i} for i, r in enumerate(GOOD_ROWS)]
    corpus = build_corpus(DataConfig(path=str(write_jsonl(tmp_path / "a.jsonl", rows)), id_column="id"))
    assert corpus.row_ids == [str(100 + i) for i in range(6)]
    corpus = build_corpus(DataConfig(path=str(write_parquet(tmp_path / "a.parquet", rows)), id_column="id"))
    assert corpus.row_ids == [str(100 + i) for i in range(6)]
    for bad, kind in [(1.5, "number"), (True, "bool"), (["x"], "list")]:
        rows = rows_with("id", {3: bad})
        with pytest.raises(DatablameError, match=rf"row 4 \(counting from 1\) has a {kind} id"):
            build_corpus(DataConfig(path=str(write_jsonl(tmp_path / "b.jsonl", rows)), id_column="id"))


def test_metadata_columns_may_hold_any_value(tmp_path):
    rows = [{**r, "year": 2000 + i, "tags": ["a"], "ok": True} for i, r in enumerate(GOOD_ROWS)]
    corpus = build_corpus(DataConfig(path=str(write_jsonl(tmp_path / "m.jsonl", rows)),
                                     metadata_columns=["year", "tags", "ok"]))
    assert corpus[0].metadata == {"year": 2000, "tags": ["a"], "ok": True}


def test_cli_refuses_non_text_data_and_keeps_earlier_results(tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw_config(tmp_path / "run", data), sort_keys=False))
    assert cli("run", "--config", str(cfg)).exit_code == 0
    att = tmp_path / "run" / "attribution"
    keep = [att / "results.json", att / "scores.npz"]
    before = [p.read_bytes() for p in keep]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[5]["answer"] = {"city": "Rome"}
    rows[9]["answer"] = 12
    write_jsonl(data, rows)  # same path, now with non-text answers
    for command in ("attribute", "run"):
        res = cli(command, "--config", str(cfg))
        assert res.exit_code == 2, (command, res.stderr)
        assert "column 'answer' (data.output_column)" in res.stderr and "2 of 24 rows" in res.stderr
        assert "row 6 (counting from 1)" in res.stderr and "Traceback" not in res.stderr
        assert [p.read_bytes() for p in keep] == before
