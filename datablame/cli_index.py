"""`datablame index`: featurize the training rows once into the run's feature store."""

from __future__ import annotations

from typing import Annotated

import typer

from datablame.cli import ConfigOpt, app, friendly
from datablame.errors import DatablameError
from datablame.layout import RunLayout


@app.command()
@friendly
def index(
    config: ConfigOpt,
    faiss: Annotated[str, typer.Option(help="auto (flat < 50k rows, else ivf), flat, ivf, ivfpq or none")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="replace a store built from another model/data/projection")] = False,
    text_indices: Annotated[bool, typer.Option(
        "--text-indices/--no-text-indices",
        help="also build the retrieval cascade's BM25 + MiniLM embedding indices (reused if current)")] = True,
    workers: Annotated[int | None, typer.Option(
        help="featurize with this many torchrun processes, or with --ray this many Ray tasks "
             "(default: the cluster's CPUs); resumable")] = None,
    ray: Annotated[bool, typer.Option(
        "--ray", help="featurize as Ray tasks (a local Ray instance unless --ray-address)")] = False,
    ray_address: Annotated[str | None, typer.Option(
        help="with --ray: join this Ray cluster ('auto', 'host:6379', 'ray://host:10001')")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="with --ray, no address: CPUs of the local Ray instance")] = None,
    faiss_metric: Annotated[str, typer.Option(
        help="cosine (grad_cosine's ANN search) or dot (grad_dot's): attribution.store.search")] = "cosine",
) -> None:
    """Build the gradient feature store (resumable; progress with rows/s and ETA) and the
    text indices of the retrieval cascade."""
    from datablame import api
    from datablame.api import load_config

    cfg = load_config(config)
    runner, workers, ray_address = index_runner(cfg.attribution.store, workers, ray, ray_address)
    if runner == "ray":
        from datablame.api_ray_index import index_ray

        summary = index_ray(config, workers=workers, address=ray_address, num_cpus=num_cpus, faiss=faiss,
                            overwrite=overwrite, text_indices=text_indices, faiss_metric=faiss_metric)
        r = summary["ray"]
        typer.echo(f"ray: {r['shards']} shards in {r['tasks']} tasks on {r['cluster_cpus']:g} CPUs "
                   f"({r['address'] or 'local instance'})")
    elif runner == "torchrun" and workers > 1:
        from datablame.api_distributed import index_distributed

        summary = index_distributed(config, workers, faiss=faiss, overwrite=overwrite, text_indices=text_indices,
                                    faiss_metric=faiss_metric)
    else:
        summary = api.index(cfg, faiss=faiss, overwrite=overwrite, text_indices=text_indices, faiss_metric=faiss_metric)
    typer.echo(
        f"store {summary['store']}: {summary['rows']} rows x {summary['dim']} dims in {summary['shards']} shards "
        f"({summary['shards_computed']} computed, {summary['shards_reused']} reused), "
        f"{summary['bytes'] / 2**20:.1f} MiB"
    )
    if summary.get("rows_per_s"):
        typer.echo(f"featurized at {summary['rows_per_s']:.1f} rows/s")
    if "faiss" in summary:
        f = summary["faiss"]
        rec = next((v for k, v in f.items() if k.startswith("recall_at_")), None)
        typer.echo(f"faiss {f['kind']} index: recall@10 vs exact {rec:.3f}" if rec is not None else f"faiss {f['kind']}")
    if "text_indices" in summary:
        typer.echo(describe_text_indices(summary["text_indices"]))
    typer.echo(f"summary: {RunLayout(cfg.output.dir).index_summary}")


def index_runner(store, workers: int | None, ray: bool, ray_address: str | None) -> tuple[str, int | None, str | None]:
    """(runner, workers, Ray address) from the flags, falling back to `attribution.store`'s keys."""
    runner = "ray" if ray else store.runner
    if runner == "process" and workers is not None and workers > 1:
        runner = "torchrun"  # --workers N alone: N torchrun ranks
    if workers is None and runner != "process":
        workers = store.workers
    if ray_address and runner != "ray":
        raise DatablameError("--ray-address is given without --ray.", "add --ray (or drop --ray-address).")
    address = ray_address or (store.ray_address if runner == "ray" else None)
    if runner == "torchrun" and workers is None:
        raise DatablameError("attribution.store.runner is torchrun but no worker count is set.",
                             "set attribution.store.workers: N (or pass --workers N).")
    return runner, workers, address


def describe_text_indices(info: dict) -> str:
    """One line: where the text indices are, what they hold, and their build time."""
    built = info.get("build_seconds") or {}
    parts = []
    if info.get("bm25"):
        parts.append(f"BM25 {built.get('bm25', 0.0):.2f} s")
    if info.get("embedding_model"):
        parts.append(f"{info['embedding_model']} embeddings {built.get('embedding', 0.0):.2f} s")
    how = f"reused (built earlier: {', '.join(parts)})" if info.get("reused") else f"built: {', '.join(parts)}"
    return f"text indices {info['path']}: {info['rows']} rows, {how}"
