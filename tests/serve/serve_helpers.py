"""A live `datablame serve` in a subprocess on a free port, and a trained small run for it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

DATABLAME = Path(sys.executable).parent / "datablame"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(run_dir: Path, path: Path, **serve) -> Path:
    from pipeline_config import small_raw

    raw = small_raw(run_dir, attribution={"method": "grad_cosine", "methods": ["grad_cosine", "bm25"], "top_k": 5,
                                          "batch_size": 16})
    # polling tests send many requests with one token: the server-wide limit stays out of their way
    # (the per-token limit is tested with a token of its own, `create_token(..., rate_limit=...)`)
    raw["serve"] = {"sync_wait_s": 0.2, "rate_limit_per_minute": 6000, **serve}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def train_run(root: Path) -> Path:
    """A trained small planted run with its feature store; returns its config."""
    from datablame import api

    cfg_path = write_config(root / "run", root / "run.yaml")
    cfg = api.load_config(cfg_path)
    api.train(cfg)
    api.index(cfg, progress=False, text_indices=False, faiss="none")
    return cfg_path


def copy_run(cfg_path: Path, dest: Path, **serve) -> Path:
    """The same trained run in another directory (its own job table and cache)."""
    src = yaml.safe_load(cfg_path.read_text())["output"]["dir"]
    shutil.copytree(src, dest / "run", ignore=shutil.ignore_patterns("serve"))
    return write_config(dest / "run", dest / "run.yaml", **serve)


class Server:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log_path = config, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None

    def start(self, timeout: float = 120) -> Server:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(DATABLAME), "serve", "--config", str(self.config), "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.get("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer /healthz:\n{self.log_path.read_text()[-3000:]}")

    def request(self, method: str, path: str, body: bytes | dict | None = None, token: str | None = "default",
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        h = {"Content-Type": "application/json", **(headers or {})}
        tok = self.token if token == "default" else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get(self, path: str, **kw) -> tuple[int, dict, bytes]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body, **kw) -> tuple[int, dict, bytes]:
        return self.request("POST", path, body, **kw)

    def json(self, method: str, path: str, body=None, **kw) -> tuple[int, dict]:
        status, _, raw = self.request(method, path, body, **kw)
        return status, json.loads(raw)

    def wait_job(self, job_id: str, timeout: float = 120) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status, job = self.json("GET", f"/v1/jobs/{job_id}")
            assert status == 200, job
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise TimeoutError(job_id)

    def attribute(self, body: dict) -> tuple[dict, bytes]:
        """Submit, wait, fetch: (the finished job, the answer's bytes)."""
        status, job = self.json("POST", "/v1/attributions", body)
        assert status in (200, 202), job
        job = self.wait_job(job["id"]) if job["state"] != "done" else job
        assert job["state"] == "done", job
        status, _, raw = self.get(f"/v1/attributions/{job['id']}")
        assert status == 200, raw
        return job, raw

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()


def create_token(config: Path, name: str = "tests", rate_limit: int | None = None) -> str:
    """A token made by `datablame serve token create` (with its own rate limit when given)."""
    extra = ["--rate-limit", str(rate_limit)] if rate_limit is not None else []
    out = subprocess.run([str(DATABLAME), "serve", "token", "create", "--config", str(config), "--name", name, *extra],
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1]
