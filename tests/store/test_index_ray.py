"""Ray featurizing (`datablame index --ray`, or `attribution.store.runner: ray`): shard ranges as Ray tasks on a local 2-CPU Ray
instance write the same store as one process (bit-identical fp16 shards, sha256), a rerun
recomputes only a shard that went missing, and an address where no Ray answers is one clear
message before any model is loaded."""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from pipeline_config import small_config

from datablame.store import open_store


def _write(cfg, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


@pytest.mark.slow  # ~25 s on 2 shared cores: a local Ray instance, 2 index runs, 2 model loads per run
def test_two_ray_tasks_match_single_process_and_rerun_recomputes_only_a_missing_shard(tmp_path):
    import ray
    from typer.testing import CliRunner

    from datablame import api
    from datablame.api_ray_index import index_ray
    from datablame.cli import app
    from datablame.layout import RunLayout

    cfg = small_config(tmp_path / "run", attribution={"store": {"shard_rows": 16}})  # 55 rows: 4 shards
    api.train(cfg)
    cfg_path = _write(cfg, tmp_path)
    store_dir = tmp_path / "run" / "store"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    try:
        summary = index_ray(cfg_path, workers=2, faiss="none", text_indices=False, progress=False)
        r = summary["ray"]
        assert (r["tasks"], r["shards"], r["rows"], r["cluster_cpus"]) == (2, 4, 55, 2.0)
        assert summary["shards"] == 4 and summary["shards_computed"] == 4
        shards = open_store(store_dir, verify=True).shards
        assert not list(store_dir.glob("parts-rank*.json")), "the driver merged and removed the part files"

        gone = store_dir / shards[2]["file"]
        gone.unlink()
        kept = {e["file"]: (store_dir / e["file"]).stat().st_mtime_ns for e in shards if e["index"] != 2}
        # the rerun through the CLI, Ray chosen by the config key instead of --ray
        cfg.attribution.store = cfg.attribution.store.model_copy(update={"runner": "ray", "workers": 2})
        res = CliRunner().invoke(app, ["index", "--config", str(_write(cfg, tmp_path)), "--faiss", "none",
                                       "--no-text-indices"])
        assert res.exit_code == 0 and "ray: 1 shards in 1 tasks" in res.output, res.output
        again = json.loads(RunLayout(cfg.output.dir).index_summary.read_text())
        assert (again["ray"]["shards"], again["ray"]["tasks"], again["ray"]["rows"]) == (1, 1, shards[2]["stop"] - shards[2]["start"])
        assert {f: (store_dir / f).stat().st_mtime_ns for f in kept} == kept, "finished shards are not rewritten"
        assert [e["sha256"] for e in open_store(store_dir, verify=True).shards] == [e["sha256"] for e in shards]
    finally:
        ray.shutdown()

    api.index(cfg, faiss="none", text_indices=False, progress=False, overwrite=True)
    single = open_store(store_dir, verify=True).shards
    assert [(e["start"], e["stop"], e["sha256"], e["norms_sha256"]) for e in single] == \
        [(e["start"], e["stop"], e["sha256"], e["norms_sha256"]) for e in shards], "bit-identical to one process"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.parametrize(("args", "store", "expect"), [
    (["--ray", "--ray-address", "127.0.0.1:{port}"], {}, "no Ray cluster answers at 127.0.0.1:"),
    ([], {"runner": "ray", "ray_address": "127.0.0.1:{port}"}, "no Ray cluster answers at 127.0.0.1:"),
    (["--ray-address", "auto"], {}, "--ray-address is given without --ray"),
    ([], {"runner": "torchrun"}, "runner is torchrun but no worker count is set"),
], ids=["flag", "config-key", "address-without-ray", "torchrun-without-workers"])
def test_cli_bad_runner_settings_are_one_clear_message(tmp_path, args, store, expect):
    """The flags and `attribution.store.runner / ray_address / workers` reach the same checks."""
    from typer.testing import CliRunner

    from datablame.cli import app

    port = _dead_port()
    cfg = small_config(tmp_path / "run")
    store = {k: v.format(port=port) for k, v in store.items()}
    cfg.attribution.store = cfg.attribution.store.model_copy(update=store)
    path = _write(cfg, tmp_path)
    args = [a.format(port=port) for a in args]
    res = CliRunner().invoke(app, ["index", "--config", str(path), *args, "--no-text-indices"])
    text = " ".join(res.output.split())
    assert res.exit_code != 0, res.output
    assert expect in text, res.output
    if "answers" in expect:
        assert "ray start --head" in text, res.output
    assert not (tmp_path / "run" / "store").exists(), "nothing was started or written"
