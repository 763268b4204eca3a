"""Peer libraries run on exactly our trained model, rows and queries (benchmark adapters).

An adapter wraps one peer library (kronfluence, traker, bergson) behind one interface:
`scores(inputs)` takes the same `AttributionContext` our methods get (the trained model,
the encoded training rows and queries with their loss masks) and returns float64 scores
`[n_queries, n_rows]` with our sign convention (higher = the row pushed the query's loss
down). `run_peer` times it and samples its peak memory in this process exactly as
`datablame bench` measures our own methods, restores the model's mode and
`requires_grad` flags afterwards (peers change them), and turns a missing library or a
failure into an entry with `error` set instead of an exception, so one broken peer never
sinks a benchmark.

Adding a peer: a module in this package with a `Peer` subclass decorated `@register_peer`
(import the peer library inside `scores`, not at module import), and its module name in
`_ADAPTER_MODULES`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from datablame.bench.measure import measure
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext

log = logging.getLogger("datablame")

_ADAPTER_MODULES = (
    "datablame.bench.peers.bergson",
    "datablame.bench.peers.kronfluence",
    "datablame.bench.peers.traker",
)


class Peer(ABC):
    """One peer library's attribution, run on our model, rows and queries."""

    name: ClassVar[str]  # registry key (`--peers name`)
    library: ClassVar[str]  # distribution name, for the version in reports
    entry_point: ClassVar[str]  # what of the library is called (for reports)
    reference: ClassVar[str] = ""  # our method it should agree with (BENCHMARKS "Agreement")
    sign: ClassVar[str] = "higher = the row pushed the query's loss down"

    def __init__(self, **options: Any) -> None:
        self.options = options

    def unavailable(self) -> str | None:
        """Why the peer cannot run here (library missing, ...), or None."""
        try:
            importlib.import_module(self.library.replace("-", "_"))
        except Exception as err:  # noqa: BLE001 - any import failure means "not available"
            return f"{self.library} is not importable ({type(err).__name__}: {err})"
        return None

    @abstractmethod
    def scores(self, inputs: AttributionContext) -> np.ndarray:
        """Scores [n_queries, n_rows] (float64), our sign convention."""

    def settings(self) -> dict[str, Any]:
        """The settings actually used (for the report)."""
        return dict(self.options)

    def describe(self) -> dict[str, Any]:
        try:
            version = importlib.metadata.version(self.library)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"name": self.name, "library": self.library, "version": version,
                "entry_point": self.entry_point, "reference": self.reference, "sign": self.sign,
                "settings": self.settings()}


PEERS: dict[str, type[Peer]] = {}


def register_peer(cls: type[Peer]) -> type[Peer]:
    PEERS[cls.name] = cls
    return cls


def load_adapters() -> dict[str, type[Peer]]:
    """Import every adapter module that exists (a peer whose module is absent is skipped)."""
    for mod in _ADAPTER_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
    return PEERS


def get_peer(name: str, **options: Any) -> Peer:
    load_adapters()
    if name not in PEERS:
        raise DatablameError(f"unknown peer {name!r}", f"choose from {sorted(PEERS)}")
    try:
        return PEERS[name](**options)
    except TypeError as err:
        raise DatablameError(f"bad options for peer {name!r}: {err}",
                             f"see the docstring of {PEERS[name].__module__}") from None


@dataclass
class PeerRun:
    name: str
    scores: np.ndarray | None
    seconds: float | None
    peak_bytes: int | None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def save_model_state(model: Any) -> tuple[bool, list[bool]]:
    """Training mode and requires_grad flags, to undo what a method or peer changes."""
    return model.training, [p.requires_grad for p in model.parameters()]


def restore_model_state(model: Any, state: tuple[bool, list[bool]]) -> None:
    training, flags = state
    model.train(training)
    for p, flag in zip(model.parameters(), flags, strict=True):
        p.requires_grad_(flag)
        p.grad = None


def run_peer(name: str, inputs: AttributionContext, options: dict[str, Any] | None = None) -> PeerRun:
    """Run one peer on `inputs`, timed and memory-measured; errors become `PeerRun.error`."""
    peer = get_peer(name, **(options or {}))
    info = peer.describe()
    reason = peer.unavailable()
    if reason:
        log.warning("peer %s not available: %s", name, reason)
        return PeerRun(name, None, None, None, info, f"not available: {reason}")
    state = save_model_state(inputs.model)
    device = next(inputs.model.parameters()).device
    try:
        m = measure(lambda: peer.scores(inputs), device)
    except Exception as err:  # noqa: BLE001 - a failing peer is reported, not fatal
        log.warning("peer %s failed: %s", name, err)
        info["traceback"] = traceback.format_exc(limit=8)
        return PeerRun(name, None, None, None, info, f"{type(err).__name__}: {err}")
    finally:
        restore_model_state(inputs.model, state)
    scores = np.asarray(m.value, dtype=np.float64)
    expected = (len(inputs.queries), len(inputs.corpus))
    if scores.shape != expected:
        return PeerRun(name, None, m.seconds, m.peak_bytes, info,
                       f"scores have shape {scores.shape}, expected {expected}")
    info["settings"] = peer.settings()  # adapters may fill defaults during the run
    return PeerRun(name, scores, m.seconds, m.peak_bytes, info)


__all__ = ["PEERS", "Peer", "PeerRun", "get_peer", "load_adapters", "register_peer", "restore_model_state",
           "run_peer", "save_model_state"]
