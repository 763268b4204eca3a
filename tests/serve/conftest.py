"""Fixtures of the `datablame serve` tests: one trained small run (with its feature store) and
one live server over it, with a token made by `datablame serve token create`."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")

from serve_helpers import Server, create_token, train_run  # noqa: E402


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="session")
def live_server(serve_run, tmp_path_factory):
    token = create_token(serve_run)
    server = Server(serve_run, tmp_path_factory.mktemp("serve_log") / "server.log").start()
    server.token = token
    yield server
    server.stop()
