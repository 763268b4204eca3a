"""Shared by the diff tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models decode token by token: one torch thread avoids oversubscribing shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    """The offline demo's before/after pair, trained once per session (about 10 s on one thread;
    many threads on 2 shared cores are far slower)."""
    from datablame.diff.demo import build_diff_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_diff_demo(tmp_path_factory.mktemp("diff_demo_models"))
    finally:
        torch.set_num_threads(threads)
