"""Inspect fitted curvature factors of one layer (seed 000's "Inspecting Influence Factors").

For a named module of a fitted EKFAC (or K-FAC / diagonal) preconditioner, writes:

- `<module>_lambda_matrix.png`: heatmap of the lambda matrix Λ (k_out x k_in): EKFAC's
  corrected eigenvalues, indexed by output-gradient (rows) and input-activation (columns)
  eigen-direction of the Kronecker factors, log colour scale;
- `<module>_lambda_sorted.png`: all Λ values sorted from largest to smallest on a symlog
  axis, with K-FAC's uncorrected eigenvalues T̄ σ_i α_j (EKFAC only) and the damping λ that
  scoring adds, so one sees how many directions the damping flattens;
- `<module>_lambda.json`: the numbers behind the plots (shape, min/max/mean, damping, how
  many values lie above the damping).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from datablame.curvature.base import HEURISTIC_DAMPING_SCALE, Preconditioner, factor_path
from datablame.errors import DatablameError

SHOWN_MODULES = 5  # how many module names an error lists


def resolve_module(names: list[str], module: str) -> str:
    """An exact module name, else the one name ending with `module` (e.g. 'layers.1.mlp.down_proj'),
    else the one name the regex `module` matches. Otherwise the error lists a few names (the
    matches, or the closest by spelling) and a count, and suggests only names in `names`."""
    if module in names:
        return module
    hits = [n for n in names if n.endswith(module)] or [n for n in names if re.search(module, n)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        more = f" and {len(hits) - SHOWN_MODULES} more" if len(hits) > SHOWN_MODULES else ""
        raise DatablameError(f"layer {module!r} matches several modules ({len(hits)} of the {len(names)} "
                             f"fitted): {', '.join(hits[:SHOWN_MODULES])}{more}",
                             f"name one exactly, e.g. --layer {hits[0]}")
    close = closest_modules(names, module, n=len(names) if len(names) <= 2 * SHOWN_MODULES else SHOWN_MODULES)
    shown = f"they are {', '.join(close)}" if len(close) == len(names) else f"closest: {', '.join(close)}"
    raise DatablameError(f"layer {module!r} matches no fitted module (of {len(names)}); {shown}",
                         f"name one of them, e.g. --layer {close[0]}" if close else "fit factors for some modules first")


def closest_modules(names: list[str], module: str, n: int = SHOWN_MODULES) -> list[str]:
    """The `n` names in `names` spelled most like `module` (a full name or a dotted suffix)."""
    from difflib import SequenceMatcher

    parts = module.count(".") + 1

    def score(name: str) -> float:
        tail = ".".join(name.split(".")[-parts:])
        return max(SequenceMatcher(None, module, name).ratio(), SequenceMatcher(None, module, tail).ratio())

    return sorted(names, key=lambda name: (-score(name), names.index(name)))[:n]


def _load(source: Preconditioner | str | Path, kind: str) -> Preconditioner:
    if isinstance(source, Preconditioner):
        return source
    from datablame.curvature import load_preconditioner

    path = Path(source)
    if path.is_dir():  # a run's attribution work dir
        path = factor_path(path, kind)
    return load_preconditioner(path)[0]


def inspect_factors(
    source: Preconditioner | str | Path, module: str, out_dir: str | Path, *,
    kind: str = "ekfac", damping: float | None = None, damping_scale: float = HEURISTIC_DAMPING_SCALE,
) -> dict[str, Path]:
    """Write the lambda-matrix heatmap, the sorted-lambda plot (symlog) and a JSON summary for
    one module. `source`: a fitted preconditioner, a factor file, or a work dir holding
    `curvature/<kind>.safetensors` (e.g. `<run>/attribution`). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from datablame.utils.io import atomic_write_json

    pre = _load(source, kind)
    if not pre.tensors:
        raise DatablameError(f"{pre.kind} factors have no lambda matrix to inspect", "inspect ekfac, kfac or diagonal factors")
    name = resolve_module(pre.modules, module)
    lam = pre.tensors[name]["lambda"].double().numpy()
    lam_damp = pre.damping_for(name, damping, damping_scale)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    paths = {
        "heatmap": out_dir / f"{stem}_lambda_matrix.png",
        "sorted": out_dir / f"{stem}_lambda_sorted.png",
        "summary": out_dir / f"{stem}_lambda.json",
    }

    positive = lam[lam > 0]
    floor = float(positive.min()) if positive.size else 1e-30
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(np.maximum(lam, floor), cmap="viridis", norm=LogNorm(vmin=floor, vmax=max(float(lam.max()), floor * 10)),
                   aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="Λ (log scale)")
    basis = "diagonal (coordinate basis)" if pre.kind == "diagonal" else "eigen-direction"
    ax.set_xlabel(f"input activation {basis} (k_in = {lam.shape[1]})")
    ax.set_ylabel(f"output gradient {basis} (k_out = {lam.shape[0]})")
    ax.set_title(f"{pre.kind.upper()} lambda matrix\n{name}")
    fig.tight_layout()
    fig.savefig(paths["heatmap"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    vals = np.sort(lam.ravel())[::-1]
    ax.plot(np.arange(vals.size), vals, lw=1.5, label=f"{pre.kind.upper()} Λ")
    kfac = pre.tensors[name].get("kfac_lambda")
    if kfac is not None:
        ax.plot(np.arange(vals.size), np.sort(kfac.double().numpy().ravel())[::-1], lw=1, ls="--", label="K-FAC T̄·σ·α (before correction)")
    ax.axhline(lam_damp, color="grey", ls=":", label=f"damping λ = {lam_damp:.3g}")
    ax.set_yscale("symlog", linthresh=max(lam_damp * 1e-2, 1e-30))
    if float(np.min(vals)) >= 0:  # Λ is a mean of squares: no negative half to show
        ax.set_ylim(bottom=0)
    ax.set_xlabel("rank")
    ax.set_ylabel("value (symlog)")
    ax.set_title(f"Sorted lambda values: {name}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["sorted"], dpi=110)
    plt.close(fig)

    summary = {
        "module": name, "kind": pre.kind, "shape": list(lam.shape),
        "min": float(lam.min()), "max": float(lam.max()), "mean": float(lam.mean()),
        "damping": lam_damp, "values_above_damping": int((lam > lam_damp).sum()), "values": int(lam.size),
        "meta": pre.meta,
    }
    if kfac is not None:
        k = kfac.double()
        summary["kfac_vs_ekfac_spearman"] = float(_spearman(k.ravel(), torch.from_numpy(lam).ravel()))
    atomic_write_json(paths["summary"], summary)
    return paths


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])
