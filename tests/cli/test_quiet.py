"""Commands print no library noise (setuptools license banner, transformers FutureWarnings,
faiss's AVX512 loader lines, Ray's token-auth banner), but our own warnings still show (issue 15 item 9)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATABLAME = str(Path(sys.executable).with_name("datablame"))
NOISE = ("SetuptoolsDeprecationWarning", "project.license", "FutureWarning", "AVX512", "AVX2",
         "faiss.loader", "Token authentication", "Started a local Ray instance")


def _assert_quiet(stderr: str) -> None:
    found = [n for n in NOISE if n in stderr]
    assert not found, f"noise on stderr: {found}\n{stderr[-2000:]}"


def test_methods_and_init_print_nothing_on_stderr(tmp_path):
    for args in (["methods"], ["init", str(tmp_path / "run.yaml")], ["--version"]):
        proc = subprocess.run([DATABLAME, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip() == "", (args, proc.stderr)


def test_library_noise_is_filtered_but_ours_is_not(tmp_path):
    script = """
import logging, warnings
import datablame.cli as cli
cli._log_to_stderr()                       # as every command does: the root logger at INFO
import faiss                               # logs 'Loading faiss with AVX512 support.' at INFO
warnings.warn_explicit("THEIR-DEPRECATION", FutureWarning, "modeling_utils.py", 1,
                       module="transformers.modeling_utils")
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
ray.shutdown()
logging.getLogger("datablame").warning("OUR-LOG-WARNING")
warnings.warn_explicit("OUR-FUTURE-WARNING", FutureWarning, "api.py", 1, module="datablame.api")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OUR-LOG-WARNING" in proc.stderr and "OUR-FUTURE-WARNING" in proc.stderr
    assert "THEIR-DEPRECATION" not in proc.stderr
    for noise in ("AVX512", "AVX2", "faiss.loader", "Token authentication", "Started a local Ray instance"):
        assert noise not in proc.stderr, proc.stderr[-2000:]


def test_package_metadata_builds_without_the_license_deprecation(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "datablame", tmp_path / "datablame", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "out").mkdir()
    code = "from setuptools import build_meta; build_meta.prepare_metadata_for_build_wheel('out')"
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_quiet(proc.stderr)
    metadata = next((tmp_path / "out").glob("*/METADATA")).read_text()
    assert "License-Expression: Apache-2.0" in metadata
