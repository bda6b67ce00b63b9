"""Policies: anything that generates and scores token sequences (see :class:`Policy`).

Backends are imported lazily (``from agentenv.policies import HFPolicy`` loads torch only then):
:class:`HFPolicy` (transformers, in-process), :class:`OpenAIPolicy` (any OpenAI-compatible
server), :class:`VLLMPolicy` (in-process vLLM), :class:`ScriptedPolicy` / :class:`RandomPolicy`
(an env's expert and random baseline), and :func:`load_policy` for CLI specs.
"""

from importlib import import_module
from typing import Any

from agentenv.policies.base import Completion, EpisodeContext, Policy, SamplingParams

_LAZY = {
    "HFPolicy": "agentenv.policies.hf",
    "OpenAIPolicy": "agentenv.policies.openai",
    "VLLMPolicy": "agentenv.policies.vllm",
    "ScriptedPolicy": "agentenv.policies.scripted",
    "RandomPolicy": "agentenv.policies.scripted",
    "load_policy": "agentenv.policies.specs",
    "load_tokenizer": "agentenv.models",
}

__all__ = ["Completion", "EpisodeContext", "Policy", "SamplingParams", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
