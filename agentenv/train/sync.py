"""Weight sync: the trained LoRA adapter pushed to a served policy after every step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import torch


class ServerSync:
    """Push the LoRA adapter to an OpenAI-compatible server after every step.

    The adapter is saved to ``RUN/adapters/step-N`` and loaded with
    ``POST {server}/v1/load_lora_adapter {"lora_name": name, "lora_path": path}``; rollouts then
    request ``model=name``.
    """

    def __init__(self, server: str, run_dir: Path, name: str = "agentenv-policy") -> None:
        self.server = server.rstrip("/")
        self.folder = run_dir / "adapters"
        self.name = name

    async def push(self, model: torch.nn.Module, step: int) -> Path:
        path = (self.folder / f"step-{step:06d}").resolve()
        model.save_pretrained(path)
        url = f"{self.server}/v1/load_lora_adapter"
        async with httpx.AsyncClient(timeout=60.0) as client:
            for attempt in range(3):
                try:
                    response = await client.post(
                        url, json={"lora_name": self.name, "lora_path": str(path)}
                    )
                    response.raise_for_status()
                    return path
                except httpx.HTTPError as exc:
                    if attempt == 2:
                        raise RuntimeError(f"weight sync to {url} failed: {exc}") from exc
                    await asyncio.sleep(0.5 * 2**attempt)
        return path
