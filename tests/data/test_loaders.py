from __future__ import annotations

import json

import pandas as pd
import pytest
from data_rows import ROWS, write_jsonl

from datablame.data.loaders import detect_format, load_records
from datablame.errors import DatablameError


def test_jsonl(tmp_path, make_cfg):
    p = write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.jsonl").write_text(p.read_text() + "\n\n")  # trailing blank lines are fine
    records, cols = load_records(make_cfg(p))
    assert records == ROWS
    assert cols == ["question", "answer", "id", "topic"]


def test_json_array(tmp_path, make_cfg):
    p = tmp_path / "d.json"
    p.write_text(json.dumps(ROWS))
    records, cols = load_records(make_cfg(p))
    assert records == ROWS and cols[:2] == ["question", "answer"]


def test_csv(tmp_path, make_cfg):
    p = tmp_path / "d.csv"
    df = pd.DataFrame(ROWS + [{"question": "Say, \"hi\"\non two lines", "answer": "", "id": "d",
                              "topic": "x"}])
    df.to_csv(p, index=False)
    records, cols = load_records(make_cfg(p))
    assert cols == ["question", "answer", "id", "topic"]
    assert records[:3] == ROWS
    assert records[3]["question"] == "Say, \"hi\"\non two lines" and records[3]["answer"] == ""


def test_parquet(tmp_path, make_cfg):
    p = tmp_path / "d.parquet"
    pd.DataFrame([dict(r, n=i) for i, r in enumerate(ROWS)]).to_parquet(p)
    records, cols = load_records(make_cfg(p))
    assert cols == ["question", "answer", "id", "topic", "n"]
    assert records[1]["answer"] == "Paris" and records[2]["n"] == 2
    assert type(records[2]["n"]) is int


def test_hf_save_to_disk_dataset_and_dict(tmp_path, make_cfg):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    records, cols = load_records(make_cfg(tmp_path / "ds"))  # auto: a directory -> hf
    assert records == ROWS and cols == ["question", "answer", "id", "topic"]

    dd = DatasetDict(train=Dataset.from_list(ROWS), test=Dataset.from_list(ROWS[:1]))
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_records(make_cfg(tmp_path / "dd", split="test"))[0]) == 1
    with pytest.raises(DatablameError, match="data.split") as e:
        load_records(make_cfg(tmp_path / "dd", split="validation"))
    assert "train" in str(e.value)


def test_hf_local_data_dir(tmp_path, make_cfg, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    d = tmp_path / "raw"
    d.mkdir()
    write_jsonl(d / "train.jsonl", ROWS)
    records, _ = load_records(make_cfg(d, format="hf"))
    assert [r["answer"] for r in records] == ["4", "Paris", "Blue"]


def test_format_detection(tmp_path, make_cfg):
    assert detect_format(make_cfg(tmp_path / "x.JSONL")) == "jsonl"
    assert detect_format(make_cfg(tmp_path / "x.csv")) == "csv"
    assert detect_format(make_cfg(tmp_path / "x.parquet")) == "parquet"
    assert detect_format(make_cfg("org/name", source="hf")) == "hf"
    assert detect_format(make_cfg(tmp_path / "x.txt", format="csv")) == "csv"


def test_unknown_extension(tmp_path, make_cfg):
    p = tmp_path / "d.txt"
    p.write_text("hello")
    with pytest.raises(DatablameError, match="data.format"):
        load_records(make_cfg(p))


def test_missing_path(tmp_path, make_cfg):
    with pytest.raises(DatablameError, match="does not exist") as e:
        load_records(make_cfg(tmp_path / "nope.jsonl"))
    assert "data.path" in str(e.value)


def test_corrupt_jsonl_names_line(tmp_path, make_cfg):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n" + '{"question": "broken",\n' + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(DatablameError, match="line 2") as e:
        load_records(make_cfg(p))
    assert e.value.fix and "line 2" in e.value.fix


def test_jsonl_non_object_line(tmp_path, make_cfg):
    p = tmp_path / "d.jsonl"
    p.write_text('[1, 2]\n')
    with pytest.raises(DatablameError, match="line 1"):
        load_records(make_cfg(p))


def test_corrupt_parquet_and_non_utf8(tmp_path, make_cfg):
    p = tmp_path / "d.parquet"
    p.write_bytes(b"not a parquet file at all")
    with pytest.raises(DatablameError, match="Parquet"):
        load_records(make_cfg(p))
    q = tmp_path / "d.jsonl"
    q.write_bytes(b'{"question": "caf\xe9"}\n')
    with pytest.raises(DatablameError, match="UTF-8"):
        load_records(make_cfg(q))


def test_empty_file(tmp_path, make_cfg):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DatablameError, match="no rows"):
        load_records(make_cfg(tmp_path / "e.jsonl"))
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DatablameError, match="empty"):
        load_records(make_cfg(tmp_path / "e.csv"))


def test_unreadable_hf_dir(tmp_path, make_cfg):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "state.json").write_text("{not json")
    with pytest.raises(DatablameError, match="Hugging Face dataset"):
        load_records(make_cfg(d))


def test_hub_id_offline(monkeypatch, make_cfg):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatablameError, match="save_to_disk") as e:
        load_records(make_cfg("no-such-owner/no-such-dataset-xyz", source="hf"))
    assert "data.path" in e.value.fix


def test_file_source_with_hub_like_path_is_missing(make_cfg):
    with pytest.raises(DatablameError, match="data.source: hf"):
        load_records(make_cfg("no-such-owner/no-such-dataset-xyz"))
