"""VLLMPolicy: an in-process vLLM engine (optional extra ``agentenv[vllm]``, needs a GPU).

Written against vLLM's documented async API (``AsyncLLM`` / ``AsyncLLMEngine.from_engine_args``
with ``AsyncEngineArgs``, ``generate(prompt=TokensPrompt(...), sampling_params=..., request_id=...,
lora_request=...)``, ``SamplingParams(logprobs=0, prompt_logprobs=0, ...)``, ``LoRARequest``).
vLLM batches concurrent requests itself (continuous batching), so each prompt is one request.

This module has not been run in the agentenv test environment (vLLM cannot be installed on its
CPU-only machine); its tests skip there. Logprobs are requested from the raw model distribution
(``logprobs_mode="raw_logprobs"``, vLLM >= 0.10.2) so they match :class:`Completion`'s contract.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentenv.policies.base import (
    Completion,
    EpisodeContext,
    FinishReason,
    SamplingParams,
    score_pairs,
)


class VLLMPolicy:
    """A model served by an in-process vLLM engine, as a :class:`~agentenv.policies.Policy`.

    Args:
        model: a Hugging Face folder or model id vLLM can load.
        tokenizer: a Hugging Face tokenizer; default: loaded from ``model`` by transformers.
        enable_lora: let :meth:`load_lora_adapter` hot-load adapters (``max_lora_rank`` caps r).
        engine_kwargs: more ``AsyncEngineArgs`` fields (``gpu_memory_utilization``,
            ``max_model_len``, ``dtype``, ``tensor_parallel_size``, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        tokenizer: Any = None,
        enable_lora: bool = False,
        max_lora_rank: int = 64,
        name: str | None = None,
        **engine_kwargs: Any,
    ) -> None:
        from vllm import AsyncEngineArgs  # the vllm extra, as every vllm import here

        try:
            from vllm.v1.engine.async_llm import AsyncLLM as Engine
        except ImportError:  # vLLM before the V1 engine
            from vllm import AsyncLLMEngine as Engine

        engine_kwargs.setdefault("logprobs_mode", "raw_logprobs")
        if enable_lora:
            engine_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
        self.engine = Engine.from_engine_args(AsyncEngineArgs(model=model, **engine_kwargs))
        if tokenizer is None:
            from transformers import AutoTokenizer  # installed with vllm

            tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer = tokenizer
        self.name = name or model
        self.lora_request: Any = None
        self._lora_ids = itertools.count(1)

    async def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        contexts: Sequence[EpisodeContext] | None = None,
    ) -> list[Completion]:
        """One vLLM request per prompt (prompt ``i`` seeded ``seed + i`` when seeded)."""
        return list(
            await asyncio.gather(
                *(self._generate_one(list(p), sampling, i) for i, p in enumerate(prompts))
            )
        )

    def _sampling_params(self, sampling: SamplingParams, row: int) -> Any:
        from vllm import SamplingParams as VLLMSampling

        return VLLMSampling(
            n=1,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            stop=list(sampling.stop),
            include_stop_str_in_output=True,
            seed=None if sampling.seed is None else sampling.seed + row,
            logprobs=0,
            skip_special_tokens=True,
            **sampling.extras.request_fields(),
        )

    async def _final(self, prompt: list[int], params: Any) -> Any:
        from vllm.inputs import TokensPrompt

        final = None
        async for output in self.engine.generate(
            prompt=TokensPrompt(prompt_token_ids=prompt),
            sampling_params=params,
            request_id=uuid.uuid4().hex,
            lora_request=self.lora_request,
        ):
            final = output
        if final is None:
            raise RuntimeError("vLLM returned no output for a request")
        return final

    async def _generate_one(
        self, prompt: list[int], sampling: SamplingParams, row: int
    ) -> Completion:
        output = (await self._final(prompt, self._sampling_params(sampling, row))).outputs[0]
        ids = list(output.token_ids)
        logprobs = [
            float(step[token].logprob)
            for token, step in zip(ids, output.logprobs or [], strict=False)
        ]
        reason: FinishReason
        stop: str | None = None
        if output.finish_reason == "length":
            reason = "length"
        elif isinstance(output.stop_reason, str):
            reason, stop = "stop", output.stop_reason
        else:
            reason = "eos"
        return Completion(ids, output.text, logprobs, reason, stop)

    async def score(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Teacher-forced logprobs from vLLM's ``prompt_logprobs`` (one generated token, unused)."""
        pairs = score_pairs(prompts, continuations)
        return list(await asyncio.gather(*(self._score_one(p, c) for p, c in pairs)))

    async def _score_one(self, prompt: list[int], continuation: list[int]) -> np.ndarray:
        from vllm import SamplingParams as VLLMSampling

        if not continuation:
            return np.zeros(0, dtype=np.float32)
        ids = prompt + continuation
        params = VLLMSampling(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        output = await self._final(ids, params)
        steps = output.prompt_logprobs[len(prompt) :]
        return np.array(
            [step[token].logprob for token, step in zip(continuation, steps, strict=True)],
            dtype=np.float32,
        )

    async def load_lora_adapter(self, name: str, path: str) -> None:
        """Use the peft adapter at ``path`` for every later request (needs ``enable_lora``)."""
        from vllm.lora.request import LoRARequest

        request = LoRARequest(name, next(self._lora_ids), str(path))
        await self.engine.add_lora(request)
        previous, self.lora_request = self.lora_request, request
        if previous is not None:
            await self.engine.remove_lora(previous.lora_int_id)

    async def unload_lora_adapter(self, name: str | None = None) -> None:
        """Go back to the base weights."""
        if self.lora_request is None or (name is not None and name != self.lora_request.lora_name):
            raise KeyError(f"LoRA adapter {name!r} is not loaded")
        previous, self.lora_request = self.lora_request, None
        await self.engine.remove_lora(previous.lora_int_id)

    async def aclose(self) -> None:
        self.engine.shutdown()
