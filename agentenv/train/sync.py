"""Weight sync: the trained weights pushed to the policies that generate rollouts after every
step — a served policy's LoRA adapter (:class:`ServerSync`), or the in-worker policies of a Ray
fan-out (:meth:`agentenv.scale.ray.RayFanout.push`); both are :class:`WeightSync`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import httpx
import torch

from agentenv.policies.openai import INFERENCE_STATUS, PolicyServerError
from agentenv.retry import Attempts, RetryPolicy, send_with_retries

SYNC_RETRY = RetryPolicy(timeout=60.0, retries=2, backoff=0.5, retryable=INFERENCE_STATUS)
"""Three attempts of 60 s each, 0.5 s then 1 s apart, on the inference server's transient
statuses; loading an adapter reads it from disk and merges it, well within a minute."""

NOT_LOADED = {400, 404}
"""What servers answer an unload of an adapter they do not hold (vLLM 400, serve-policy 404)."""


class WeightSync(Protocol):
    """What gives the rollout policies the learner's weights after an update."""

    async def push(self, model: torch.nn.Module, step: int) -> object:
        """Make ``model``'s weights (after ``step`` updates) the ones rollouts are played with."""
        ...


class ServerSync:
    """Push the LoRA adapter to an OpenAI-compatible server after every step.

    The adapter is saved to ``RUN/adapters/step-N`` and loaded with
    ``POST {server}/v1/load_lora_adapter {"lora_name": name, "lora_path": path}``; rollouts then
    request ``model=name``. From the second push on, the adapter loaded before is first removed
    (``POST {server}/v1/unload_lora_adapter {"lora_name": name}``; an answer that it is not
    loaded is fine), because vLLM's server refuses to load a name it already serves. A load that
    fails for good is a :class:`~agentenv.policies.openai.PolicyServerError` naming the URL.
    """

    def __init__(
        self,
        server: str,
        run_dir: Path,
        name: str = "agentenv-policy",
        retry: RetryPolicy = SYNC_RETRY,
    ) -> None:
        self.server = server.rstrip("/")
        self.folder = run_dir / "adapters"
        self.name = name
        self.retry = retry
        self.pushed = 0

    async def _post(self, client: httpx.AsyncClient, route: str, body: dict[str, str]) -> None:
        url = f"{self.server}/v1/{route}"

        async def send(attempts: Attempts) -> httpx.Response:
            return await client.post(url, json=body)

        await send_with_retries(send, self.retry, method="POST", url=url, error=PolicyServerError)

    async def push(self, model: torch.nn.Module, step: int) -> Path:
        path = (self.folder / f"step-{step:06d}").resolve()
        model.save_pretrained(path)
        async with httpx.AsyncClient(timeout=self.retry.timeout) as client:
            if self.pushed:
                try:
                    await self._post(client, "unload_lora_adapter", {"lora_name": self.name})
                except PolicyServerError as exc:
                    if exc.status not in NOT_LOADED:
                        raise
            await self._post(
                client, "load_lora_adapter", {"lora_name": self.name, "lora_path": str(path)}
            )
        self.pushed += 1
        return path
