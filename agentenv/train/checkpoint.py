"""Checkpoints: weights (or LoRA adapter), optimizer, scheduler, RNG states, step, data position.

A checkpoint is a folder ``RUN/checkpoints/step-000012`` holding

- ``model/``: ``save_pretrained`` output (full weights, or only the adapter for a peft model),
  usable as a model folder on its own;
- ``trainer.pt``: optimizer and scheduler state dicts;
- ``state.json``: step, data position and anything else the loop needs to continue;
- ``rng.pt``: Python, NumPy and torch (CPU and CUDA) generator states;
- ``extra.pt``: only when given, the state of models trained beside the policy (tensors and
  all, :func:`load_extra_state`).

It is written to a temporary folder and renamed into place, then ``RUN/checkpoints/latest`` is
replaced atomically; a process killed at any moment leaves either the previous or the new
checkpoint, never a partial one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

CHECKPOINTS = "checkpoints"
LATEST = "latest"
EXTRA = "extra.pt"


def rng_state() -> dict[str, Any]:
    """Every random generator's state."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    state: dict[str, Any] | None = None,
    tokenizer: Any = None,
    keep: int = 2,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, keep the newest ``keep``;
    ``extra_state`` (anything ``torch.save`` takes) goes to ``extra.pt`` when not empty."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        model.save_pretrained(tmp / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
        torch.save(
            {
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
            },
            tmp / "trainer.pt",
        )
        torch.save(rng_state(), tmp / "rng.pt")
        if extra_state:
            torch.save(extra_state, tmp / EXTRA)
        (tmp / "state.json").write_text(json.dumps({"step": step, **(state or {})}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _atomic_write_text(root / LATEST, final.name)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``latest`` points at, or None when the run has no checkpoint."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    return folder if (folder / "state.json").is_file() else None


def load_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Load ``save_pretrained`` weights (full model or peft adapter) into ``model`` in place."""
    folder = Path(folder)
    adapter = folder / "adapter_model.safetensors"
    if adapter.is_file():
        result = set_peft_model_state_dict(model, load_file(adapter))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{adapter}: unexpected adapter keys {result.unexpected_keys[:5]}")
        return
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(f))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise ValueError(f"{folder}: unexpected weight names {unexpected[:5]}")
    params = dict(model.state_dict())
    loaded_ptrs = {params[k].data_ptr() for k in weights}
    untied = [k for k in missing if params[k].data_ptr() not in loaded_ptrs]
    if untied:
        raise ValueError(f"{folder}: missing weights {untied[:5]}")


def load_checkpoint(
    folder: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore a checkpoint in place and return its ``state.json`` (with ``step``)."""
    folder = Path(folder)
    load_weights(model, folder / "model")
    trainer = torch.load(folder / "trainer.pt", weights_only=False)
    if optimizer is not None and trainer["optimizer"] is not None:
        optimizer.load_state_dict(trainer["optimizer"])
    if scheduler is not None and trainer["scheduler"] is not None:
        scheduler.load_state_dict(trainer["scheduler"])
    if restore_rng:
        set_rng_state(torch.load(folder / "rng.pt", weights_only=False))
    return json.loads((folder / "state.json").read_text())


def load_extra_state(folder: str | Path) -> dict[str, Any]:
    """The ``extra_state`` a checkpoint was saved with ({} when it had none)."""
    path = Path(folder) / EXTRA
    return torch.load(path, weights_only=False) if path.is_file() else {}
