"""OpenAIPolicy: any OpenAI-compatible server (``vllm serve``, SGLang, ``agentenv serve-policy``).

Generation goes through ``POST /v1/completions`` with the prompt as a list of token ids, one
request per prompt (the server batches them), and asks for the generated token ids back:

1. ``choices[i].token_ids`` when the server returns it (``agentenv serve-policy``; vLLM >= 0.10.2
   with ``return_token_ids: true``, which this client sends);
2. else ``logprobs.tokens`` of the form ``"token_id:123"`` (vLLM's
   ``return_tokens_as_token_ids: true``, also sent);
3. else, as a last resort, the returned text re-encoded with :attr:`OpenAIPolicy.tokenizer`.
   Re-encoding is not token-faithful (the ids may differ from what the model sampled); a
   warning is logged once, and the logprobs are kept only when their count matches.

``score`` sends ``prompt + continuation`` with ``echo: true, max_tokens: 0, logprobs: 1`` and
reads the prompt-token logprobs the server echoes back (supported by vLLM and serve-policy).

Chat: :meth:`OpenAIPolicy.chat` posts ``/v1/chat/completions`` and returns the raw response;
:meth:`OpenAIPolicy.chat_message` returns its first choice as an
:class:`~agentenv.toolcalls.AssistantMessage` (content and :class:`~agentenv.toolcalls.ToolCall`
objects with dict arguments, whether the server sent ``arguments`` as a JSON string, as OpenAI
specifies, or as an object), and :func:`assistant_messages` reads every choice of a raw
response. Both take ``tools``/``tool_choice`` and histories with tool calls: assistant messages
as OpenAI dicts or :class:`~agentenv.toolcalls.AssistantMessage` objects, their call arguments
sent as JSON strings whatever form they were given in.

Requests carry vLLM's ``include_stop_str_in_output: true`` so a stop string stays in the text,
as it does in the ids. Transient failures (connection errors, timeouts, the statuses of
:data:`INFERENCE_STATUS`) are retried with exponential backoff, honouring ``Retry-After``
(:func:`agentenv.retry.send_with_retries`); a concurrency cap bounds the requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from agentenv.models import load_tokenizer
from agentenv.policies.base import (
    Completion,
    EpisodeContext,
    FinishReason,
    SamplingParams,
    score_pairs,
)
from agentenv.retry import (
    GATEWAY_STATUS,
    Attempts,
    RequestFailed,
    RetryPolicy,
    send_with_retries,
)
from agentenv.toolcalls import (
    AssistantMessage,
    ToolCallError,
    call_from_object,
    message_from_openai,
)

log = logging.getLogger(__name__)

INFERENCE_STATUS = GATEWAY_STATUS | {408, 409, 429, 500}
"""The statuses on which a call to an inference server is retried, as the OpenAI SDK retries
them: a server that is down or restarting (:data:`~agentenv.retry.GATEWAY_STATUS`), and one
under load — 429 (too many requests: its queue is full), 408 (request timeout), 409 (lock
timeout) and 500 (an engine fault that the next batch may not hit). A tool service's 500 is a
bug in it, so :mod:`agentenv.service` does not retry it."""


class PolicyServerError(RequestFailed):
    """An inference server failed or could not be reached (after the bounded retries)."""


class OpenAIPolicy:
    """A model behind an OpenAI-compatible HTTP API, as a :class:`~agentenv.policies.Policy`.

    Args:
        base_url: server root, with or without the trailing ``/v1``
            (e.g. ``http://127.0.0.1:8000``).
        model: model name to request (for vLLM and serve-policy, a LoRA adapter's name selects
            the adapter).
        api_key: sent as ``Authorization: Bearer ...`` when given.
        tokenizer: a Hugging Face tokenizer, or a spec/path to load one (``tiny``, ``smollm2``,
            a model folder). The rollout engine needs it to build prompts; generation itself
            only uses it for the re-encoding fallback.
        max_concurrency: most requests in flight at once.
        retries, backoff, timeout: transient failures (:data:`INFERENCE_STATUS`) are retried
            ``retries`` times, waiting ``backoff * 2**k`` seconds (or the server's
            ``Retry-After``); each attempt may take ``timeout`` seconds.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        tokenizer: Any = None,
        max_concurrency: int = 64,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 300.0,
        name: str | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else f"{root}/v1"
        self.model = model
        self.name = name or model
        self.tokenizer = _resolve_tokenizer(tokenizer)
        self.retry = RetryPolicy(
            timeout=timeout, retries=retries, backoff=backoff, retryable=INFERENCE_STATUS
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=timeout,
            headers=headers,
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
        )
        self._slots = asyncio.Semaphore(max_concurrency)
        self._warned_reencode = False

    # -- HTTP ----------------------------------------------------------------------------------
    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to ``{base_url}{path}`` with retries; raise PolicyServerError naming the URL."""
        url = f"{self.base_url}{path}"

        async def send(attempts: Attempts) -> httpx.Response:
            return await self._client.post(url, json=body)

        async with self._slots:
            response = await send_with_retries(
                send, self.retry, method="POST", url=url, error=PolicyServerError
            )
        return response.json()

    # -- Policy protocol -----------------------------------------------------------------------
    async def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        contexts: Sequence[EpisodeContext] | None = None,
    ) -> list[Completion]:
        """One ``/v1/completions`` request per prompt, concurrently (up to the cap).

        With ``sampling.seed`` set, prompt ``i`` is sent with seed ``seed + i``.
        """
        return list(
            await asyncio.gather(
                *(self._complete(list(map(int, p)), sampling, i) for i, p in enumerate(prompts))
            )
        )

    async def _complete(self, prompt: list[int], sampling: SamplingParams, row: int) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "logprobs": 1,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "include_stop_str_in_output": True,
            "skip_special_tokens": True,
        }
        if sampling.top_k > 0:
            body["top_k"] = sampling.top_k
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed + row
        body.update(sampling.extras.request_fields())
        choice = (await self.post("/completions", body))["choices"][0]
        return self._parse_choice(choice, sampling)

    def _parse_choice(self, choice: dict[str, Any], sampling: SamplingParams) -> Completion:
        text = choice.get("text") or ""
        logprobs_block = choice.get("logprobs") or {}
        logprobs = [float(x) for x in logprobs_block.get("token_logprobs") or []]
        ids = choice.get("token_ids")
        if ids is None:
            ids = _ids_from_labels(logprobs_block.get("tokens") or [])
        if ids is None:
            ids = self._reencode(text)
            if len(logprobs) != len(ids):
                logprobs = [float("nan")] * len(ids)
        reason, stop = _finish(choice, text, sampling)
        return Completion(list(map(int, ids)), text, logprobs, reason, stop)

    def _reencode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise PolicyServerError(
                "the server returned no token ids (neither choices[].token_ids nor "
                "'token_id:N' tokens); give OpenAIPolicy a tokenizer to re-encode the text",
                self.base_url,
            )
        if not self._warned_reencode:
            log.warning(
                "%s returns no token ids; re-encoding text, which may not match the sampled ids",
                self.base_url,
            )
            self._warned_reencode = True
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def score(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Teacher-forced logprobs via ``echo: true, max_tokens: 0, logprobs: 1``."""
        pairs = score_pairs(prompts, continuations)
        return list(await asyncio.gather(*(self._score_one(p, c) for p, c in pairs)))

    async def _score_one(self, prompt: list[int], continuation: list[int]) -> np.ndarray:
        if not continuation:
            return np.zeros(0, dtype=np.float32)
        body = {
            "model": self.model,
            "prompt": [*map(int, prompt), *map(int, continuation)],
            "max_tokens": 0,
            "echo": True,
            "logprobs": 1,
            "temperature": 0.0,
        }
        choice = (await self.post("/completions", body))["choices"][0]
        values = (choice.get("logprobs") or {}).get("token_logprobs") or []
        if len(values) < len(continuation):
            raise PolicyServerError(
                f"{self.base_url}/completions echoed {len(values)} prompt logprobs for a "
                f"{len(prompt) + len(continuation)}-token prompt; the server does not support "
                "echo scoring",
                self.base_url,
            )
        return np.asarray(values[-len(continuation) :], dtype=np.float32)

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any] | AssistantMessage],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """``POST /v1/chat/completions``; the raw response.

        ``messages`` may hold assistant messages with ``tool_calls`` (OpenAI dicts, arguments a
        JSON string or a dict, or :class:`AssistantMessage` objects) and ``tool`` messages;
        ``tools`` are OpenAI tool schemas (``env.tools``), ``tool_choice`` OpenAI's
        (``"auto"``, ``"none"``, ``"required"`` or a named function). ``params`` are further
        OpenAI fields (``max_tokens``, ``temperature``, ``n``, ...). A message that cannot be
        put on the wire is a ValueError; a failed request a :class:`PolicyServerError`.
        """
        body: dict[str, Any] = {"model": self.model, "messages": wire_messages(messages)}
        if tools is not None:
            body["tools"] = [dict(t) for t in tools]
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        return await self.post("/chat/completions", {**body, **params})

    async def chat_message(
        self,
        messages: Sequence[Mapping[str, Any] | AssistantMessage],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        **params: Any,
    ) -> AssistantMessage:
        """:meth:`chat`'s first choice as an :class:`AssistantMessage`: its content and tool
        calls (dict arguments, the server's call ids). Calls the server sent malformed are left
        out and described in ``error``."""
        response = await self.chat(messages, tools=tools, tool_choice=tool_choice, **params)
        try:
            return assistant_messages(response)[0]
        except (ValueError, IndexError) as exc:
            raise PolicyServerError(
                f"{self.base_url}/chat/completions answered without a message: {exc}",
                self.base_url,
            ) from exc

    async def models(self) -> list[str]:
        """Model ids the server lists at ``GET /v1/models``."""
        url = f"{self.base_url}/models"
        try:
            response = await self._client.get(url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise PolicyServerError(f"GET {url} failed: {exc}", url) from exc
        return [m["id"] for m in response.json().get("data", [])]

    async def aclose(self) -> None:
        await self._client.aclose()


def wire_messages(
    messages: Sequence[Mapping[str, Any] | AssistantMessage],
) -> list[dict[str, Any]]:
    """Chat messages as OpenAI's wire format takes them: :class:`AssistantMessage` objects as
    OpenAI assistant messages, every tool call as ``{"id", "type": "function", "function":
    {"name", "arguments": <JSON string>}}`` (dict arguments are encoded). A tool call that
    cannot be read is a ValueError naming the message."""
    out = []
    for index, message in enumerate(messages):
        entry = message.to_openai() if isinstance(message, AssistantMessage) else dict(message)
        if entry.get("tool_calls"):
            try:
                entry["tool_calls"] = [call_from_object(c).to_openai() for c in entry["tool_calls"]]
            except ToolCallError as exc:
                raise ValueError(f"messages[{index}]: {exc}") from exc
        out.append(entry)
    return out


def assistant_messages(response: Mapping[str, Any]) -> list[AssistantMessage]:
    """Every choice of a chat-completions response as an :class:`AssistantMessage`, in order.

    Tool-call ``arguments`` may be JSON strings (OpenAI) or objects (some servers); both become
    dicts. A response without ``choices`` is a ValueError.
    """
    choices = response.get("choices")
    if not isinstance(choices, list):
        raise ValueError("the response has no choices list")
    return [message_from_openai(choice.get("message") or {}) for choice in choices]


def _resolve_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None or not isinstance(tokenizer, str):
        return tokenizer
    return load_tokenizer(tokenizer)


def _ids_from_labels(labels: Sequence[str]) -> list[int] | None:
    """Ids from vLLM's ``"token_id:123"`` token labels; None when they are not in that form."""
    if not labels or not all(isinstance(x, str) and x.startswith("token_id:") for x in labels):
        return None
    return [int(x.removeprefix("token_id:")) for x in labels]


def _finish(
    choice: dict[str, Any], text: str, sampling: SamplingParams
) -> tuple[FinishReason, str | None]:
    """Map OpenAI's ``stop``/``length`` to stop-string / eos / length.

    vLLM and serve-policy put the matched stop string in ``stop_reason`` (an int there is a stop
    token, i.e. eos); without that field, a stop string ending the text counts as matched.
    """
    if choice.get("finish_reason") == "length":
        return "length", None
    stop_reason = choice.get("stop_reason")
    if isinstance(stop_reason, str):
        return "stop", stop_reason
    if "stop_reason" not in choice:
        for stop in sampling.stop:
            if stop and text.endswith(stop):
                return "stop", stop
    return "eos", None
