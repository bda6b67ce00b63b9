"""Training configuration: YAML → typed, validated objects with documented defaults.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key fails with its full
path (``optim.lrr: unknown key``). ``--set a.b=v`` overrides are parsed as YAML scalars
(``--set optim.lr=3e-4``, ``--set envs.0.kwargs.hops=2``, ``--set loss.dual_clip=null``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from agentenv.rewards.estimators import (
    ESTIMATORS,
    check_options,
    options_model,
    validate_options,
)
from agentenv.rewards.info_gain import InfoGainConfig as InfoGainOptions
from agentenv.rewards.process import JudgeConfig as JudgeOptions
from agentenv.rewards.rubric import load_function
from agentenv.toolcalls import PARSERS
from agentenv.train.losses import AggMode, KLKind

_INFO_GAIN_OPTIONS = options_model("info_gain_options", [InfoGainOptions])
_JUDGE_OPTIONS = options_model("judge_options", [JudgeOptions])


class ConfigError(ValueError):
    """A configuration that does not validate; the message names every bad key by its path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Section):
    """LoRA adapters through peft (``enabled: false`` trains every weight)."""

    enabled: bool = False
    r: int = Field(16, gt=0, description="adapter rank")
    alpha: float = Field(32.0, gt=0, description="scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="module names to adapt",
    )


class ModelConfig(Section):
    """The policy being trained."""

    spec: str = Field("tiny", description="a model folder, or 'tiny' (built with model.tiny)")
    tiny: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of agentenv.models.tiny"
    )
    init_from: str | None = Field(
        None, description="start from this model folder or run folder (e.g. an SFT run)"
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    reference: Literal["auto", "none", "frozen", "adapters"] = Field(
        "auto",
        description="KL reference: a frozen copy, the base model with adapters disabled, or none "
        "(auto: adapters with LoRA, a frozen copy otherwise, none when loss.kl_coef is 0 and KL "
        "is not logged)",
    )
    server: str | None = Field(
        None,
        description="URL of an OpenAI-compatible serve-policy to sync weights to (LoRA adapters "
        "hot-loaded via /v1/load_lora_adapter); rollouts then go through that server",
    )
    device: str = Field("auto", description="'cpu', 'cuda', 'cuda:1' or 'auto'")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto: bfloat16 on a GPU with native bf16, float32 otherwise (agentenv.devices)",
    )
    mixed_precision: bool = Field(
        False,
        description="fp32 master weights: parameters and AdamW state in float32, every training "
        "forward pass under torch.autocast(bfloat16) (CUDA or CPU); needs dtype auto or float32. "
        "Off: parameters and optimizer state in model.dtype (on CUDA, bfloat16 updates smaller "
        "than a weight's bfloat16 resolution are lost)",
    )
    max_batch_size: int = Field(64, gt=0, description="generation batch size of the HF policy")
    prefix_cache_mib: float = Field(
        0.0,
        ge=0,
        description="memory for the HF policy's prefix cache: finished rows' keys and values, "
        "reused by the next turn's prompt so it prefills only its new tokens (0: off; a row "
        "with a hit matches a fresh prefill up to float rounding; docs/policies.md)",
    )

    @field_validator("mixed_precision")
    @classmethod
    def _fp32_master(cls, value: bool, info: ValidationInfo) -> bool:
        dtype = info.data.get("dtype", "auto")
        if value and dtype not in ("auto", "float32"):
            raise ValueError(f"fp32 master weights need model.dtype auto or float32, not {dtype}")
        return value

    batch_invariant: bool | None = Field(
        None,
        description="generate every row exactly as it would be generated alone, so runs with the "
        "same seed are identical however requests were batched (null: where it holds, on CPU)",
    )


class EnvConfig(Section):
    """One environment of the training mixture."""

    id: str
    kwargs: dict[str, Any] = Field(default_factory=dict, description="make() keyword arguments")
    train_split: str | None = Field(
        None, description="split trained on; null: the env's 'train' split (or its only source)"
    )
    test_split: str | None = Field(
        None, description="held-out split; null: the env's 'test' split (or its only source)"
    )
    train_seed_start: int = Field(0, description="training tasks use seeds start, start+1, …")
    test_seed_start: int = Field(1_000_000, description="held-out tasks use seeds start, …")
    weight: float = Field(1.0, gt=0, description="share of each step's tasks")


class RolloutSection(Section):
    """Rollout budgets and sampling (see agentenv.rollout.RolloutConfig) and batch shape."""

    max_turns: int | None = Field(None, description="agent turns per episode; null: env's limit")
    max_tokens_per_turn: int = Field(64, gt=0)
    max_context_tokens: int = Field(1024, gt=0)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    max_concurrent_episodes: int = Field(256, gt=0)
    tool_parser: str | None = Field(
        None, description="tool-call format of envs with native tools; null: from the template"
    )
    group_size: int = Field(8, gt=0, description="episodes per task (G)")
    tasks_per_step: int = Field(8, gt=0, description="tasks (groups) per training step")

    @field_validator("tool_parser")
    @classmethod
    def _known_parser(cls, value: str | None) -> str | None:
        if value is not None and value not in PARSERS:
            raise ValueError(f"unknown tool-call parser {value!r}; known: {', '.join(PARSERS)}")
        return value


class GatingConfig(Section):
    """G-RA gated reward accumulation (arXiv 2508.10548)."""

    enabled: bool = False
    threshold: float = Field(0.0, description="δ: step rewards count only when outcome ≥ δ")
    step_components: list[str] | None = Field(
        None,
        description="reward components that are step rewards, counted with their "
        "process_rewards weight (null: the whole reward of every non-final turn)",
    )


class InfoGainConfig(Section):
    """Information-gain turn rewards (IGPO, arXiv 2510.14967) from teacher-forced scores."""

    enabled: bool = False
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fields of agentenv.rewards.info_gain.InfoGainConfig (bridge, suffix, …)",
    )

    @field_validator("options")
    @classmethod
    def _typed(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_options(_INFO_GAIN_OPTIONS, value, "info gain")


class JudgeSection(Section):
    """An LLM judge grading every turn (agentenv.rewards.process.LLMJudge): its score in [0, 1]
    is the reward component ``judge``, added to the turn's reward times ``weight``."""

    policy: str | None = Field(
        None,
        description="the judge: any policy spec of agentenv.policies.specs (a model folder, "
        "openai:URL#MODEL, smollm2, tiny); null: no judge",
    )
    policy_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the judge policy (device, …)"
    )
    weight: float = Field(1.0, description="w of r_t += w·judge_t")
    history_turns: int | None = Field(
        None, ge=0, description="earlier turns shown with each graded turn; null: all"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fields of agentenv.rewards.process.JudgeConfig (template, score_pattern, "
        "score_range, mode: generate|expected, …)",
    )

    @field_validator("options")
    @classmethod
    def _typed(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_options(_JUDGE_OPTIONS, value, "judge")

    @property
    def enabled(self) -> bool:
        return self.policy is not None


class PRMSection(Section):
    """An implicit process reward model trained alongside the policy: PRIME (arXiv 2502.01456)
    or OPRL (arXiv 2509.19199). Its per-turn reward β·Σ_turn (log π_φ − log π_ref) is the
    reward component ``prm``, added times ``weight``."""

    kind: Literal["prime", "oprl"] | None = Field(
        None,
        description="prime: cross-entropy on success, π_ref the starting policy; oprl: "
        "trajectory DPO between a group's successes and failures, π_ref the rollout policy; "
        "null: no PRM",
    )
    beta: float = Field(0.05, gt=0, description="β of the implicit reward")
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate of the PRM")
    weight: float = Field(1.0, description="w of r_t += w·prm_t")
    update: Literal["before", "after"] | None = Field(
        None,
        description="train the PRM on a batch before or after rewarding it; null: before for "
        "prime, after for oprl (as their code does)",
    )
    grad_clip: float | None = Field(10.0, gt=0, description="max PRM grad norm; null: off")

    @property
    def enabled(self) -> bool:
        return self.kind is not None


class SPASection(Section):
    """SPA-RL progress attribution (arXiv 2505.20732): a linear head on the policy's hidden
    state at each turn's last action token, fitted each step so that a trajectory's turn
    contributions sum to its return; r_t += weight·(ĉ_t + grounding·g_t) as component ``spa``."""

    enabled: bool = Field(False, description="fit the progress head and add its rewards")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate of the progress head")
    steps: int = Field(200, gt=0, description="Adam steps of the head on each step's batch")
    weight: float = Field(1.0, description="w of r_t += w·spa_t")
    grounding: float = Field(
        0.0,
        description="β of spa_t = ĉ_t + β·g_t, g_t = the turn's action_valid (1 on the last "
        "turn); SPA-RL's code amounts to 0.5",
    )


class RubricFunction(Section):
    """One function of a rubric: ``f(**context) -> float`` named by import path."""

    function: str = Field(
        ...,
        description="MODULE:FUNCTION of f(completion=, ground_truth=, success=, …) -> float "
        "(keywords: agentenv.rewards.rubric.episode_context)",
    )
    weight: float = Field(1.0, description="w_k of R = Σ_k w_k·f_k; 0: logged, not rewarded")

    @field_validator("function")
    @classmethod
    def _importable(cls, value: str) -> str:
        load_function(value)
        return value


class RubricSection(Section):
    """A rubric (agentenv.rewards.rubric.Rubric) scoring every finished episode:
    R = Σ_k w_k·f_k(**context), the reward component ``rubric`` of the episode's last turn,
    added to its reward times ``weight``; each function's mean score is logged as
    ``rubric/NAME``."""

    functions: dict[str, RubricFunction] = Field(
        default_factory=dict, description="name → {function: MODULE:FUNCTION, weight}; {}: off"
    )
    weight: float = Field(1.0, description="w of r_last += w·R")

    @property
    def enabled(self) -> bool:
        return bool(self.functions)


class AlgorithmConfig(Section):
    """Credit assignment: how per-turn rewards become per-turn advantages."""

    estimator: str = Field("grpo", description=", ".join(ESTIMATORS))
    options: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="keyword arguments of the estimator (agentenv.rewards.estimators), checked "
        "against its signature",
    )
    gating: GatingConfig = Field(default_factory=GatingConfig)
    info_gain: InfoGainConfig = Field(default_factory=InfoGainConfig)
    process_rewards: dict[str, float] = Field(
        default_factory=dict,
        description="extra weight per reward component added to each turn's reward",
    )
    judge: JudgeSection = Field(default_factory=JudgeSection)
    prm: PRMSection = Field(default_factory=PRMSection)
    spa: SPASection = Field(default_factory=SPASection)
    rubric: RubricSection = Field(default_factory=RubricSection)

    @field_validator("estimator")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ESTIMATORS:
            raise ValueError(f"unknown estimator {value!r}; known: {', '.join(ESTIMATORS)}")
        return value

    @field_validator("options")
    @classmethod
    def _typed(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "estimator" not in info.data:  # the estimator is invalid, and reported
            return value
        return validate_options(info.data["estimator"], value)


class OptimConfig(Section):
    """AdamW with linear warm-up then cosine (or constant) decay, per optimizer step."""

    lr: float = Field(1e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warm-up")
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; null: off")
    epochs: int = Field(1, gt=0, description="optimisation passes over each rollout batch")
    mini_batches: int = Field(1, gt=0, description="optimizer steps per epoch")
    micro_batch_tokens: int = Field(8192, gt=0, description="padded tokens per forward pass")


class LossConfig(Section):
    """Token loss: PPO clip, dual clip, turn ratio, aggregation, KL, entropy."""

    clip_low: float = Field(0.2, ge=0, description="ε_low: ratio floor 1 − ε_low")
    clip_high: float = Field(0.28, ge=0, description="ε_high: ratio ceiling 1 + ε_high (DAPO)")
    dual_clip: float | None = Field(None, gt=1, description="c of dual clip for A < 0; null: off")
    turn_ratio: bool = Field(False, description="A²TGPO turn-level importance ratio")
    turn_clip_scale: bool = Field(
        True, description="use the estimator's per-turn clip scales when it returns them"
    )
    agg_mode: AggMode = "token-mean"
    norm_length: int | None = Field(
        None, description="constant L of seq-mean-token-sum-norm (null: rollout.max_context_tokens)"
    )
    kl_coef: float = Field(0.0, ge=0)
    kl_kind: KLKind = "k3"
    entropy_coef: float = Field(0.0, ge=0)
    recompute_old_logprobs: bool = Field(
        False,
        description="before the update epochs, recompute the old log-probabilities with the "
        "training forward pass (no grad, eval mode) instead of the rollout's, logging their "
        "mean difference as old_logprob_drift (verl recomputes by default)",
    )


class ValueConfig(Section):
    """PPO's value head (agentenv.train.value): a linear head on the policy's last hidden state
    sharing its trunk, trained jointly with the clipped value loss; needed by estimator ppo."""

    enabled: bool = Field(False, description="train a value head (algorithm.estimator: ppo)")
    coef: float = Field(0.5, ge=0, description="c_V of L = L_policy + c_V·L_V (PPO's c1)")
    clip: float | None = Field(
        0.2,
        gt=0,
        description="ε_V: a value moves at most ε_V from its pre-update value before the loss "
        "stops shrinking (PPO value clipping, in return units); null: plain squared error",
    )
    lr_scale: float = Field(
        10.0,
        gt=0,
        description="the head's learning rate is optim.lr × lr_scale (verl's recipes train the "
        "critic at 10× the actor's rate); the shared trunk keeps optim.lr",
    )


def uses_value_head(algorithm: AlgorithmConfig) -> bool:
    """Whether ``algorithm``'s advantages read per-turn values (ppo, or empg on ppo)."""
    base = algorithm.options.get("base") if algorithm.estimator == "empg" else None
    return "ppo" in (algorithm.estimator, base)


class DynamicSamplingConfig(Section):
    """DAPO dynamic sampling: drop groups whose rewards have zero variance, then refill."""

    enabled: bool = False
    max_rounds: int = Field(3, gt=0, description="extra collection rounds to refill the batch")


class EvalConfig(Section):
    """Periodic evaluation on the held-out split."""

    every: int = Field(0, ge=0, description="steps between evaluations; 0: only start and end")
    tasks: int = Field(64, ge=0, description="held-out tasks per env")
    samples: int = Field(1, gt=0, description="episodes per task")
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    at_start: bool = True
    at_end: bool = True


class CheckpointConfig(Section):
    every: int = Field(10, ge=0, description="steps between checkpoints; 0: only at the end")
    keep: int = Field(2, gt=0, description="checkpoints kept on disk")


class LoggingConfig(Section):
    tensorboard: bool = Field(False, description="also write TensorBoard scalars")
    live: bool = Field(True, description="rich live view in a terminal")
    save_trajectories: bool = Field(
        True,
        description="write each step's rollouts, with their step and per-turn credit, to "
        "RUN/rollouts.jsonl",
    )
    transcripts: bool = Field(
        True,
        description="give every saved trajectory (rollouts and held-out evaluations) its capped "
        "transcript: chat, token text, loss mask (agentenv.transcript)",
    )


class RayConfig(Section):
    """Rollouts and env services fanned out over a Ray cluster (``agentenv.scale.ray``, the
    ``ray`` extra; ``agentenv train --ray ADDRESS`` sets ``address``). See docs/scale.md."""

    address: str | None = Field(
        None,
        description="null: no Ray; 'local': start a private cluster on this machine for the run "
        "(stopped with it); 'auto': the cluster `ray start` runs on this machine; or "
        "HOST:PORT / ray://HOST:PORT of a cluster's head",
    )
    workers: int = Field(0, ge=0, description="rollout worker actors; 0: one per node")
    cpus_per_worker: float = Field(1.0, ge=0, description="CPUs Ray reserves per rollout worker")
    gpus_per_worker: float = Field(
        0.0, ge=0, description="GPUs Ray reserves per rollout worker (its policy copy runs there)"
    )
    services: Literal["actors", "in-worker"] = Field(
        "actors",
        description="actors: env services (in-process or 'local' ones) run as Ray actors spread "
        "over the nodes, reached by URL; in-worker: each worker's envs keep their own service",
    )
    service_replicas: int = Field(
        0, ge=0, description="service actors per env service and config; 0: one per node"
    )
    cpus_per_service: float = Field(0.0, ge=0, description="CPUs Ray reserves per service actor")
    max_retries: int = Field(
        1,
        ge=0,
        description="times an episode whose worker died is played again on another worker "
        "before it is recorded as an error naming the worker",
    )


class PretrainConfig(Section):
    """Language-model warm-up of a model built from scratch, before SFT (``agentenv.train.pretrain``)."""

    enabled: bool = False
    steps: int = Field(600, gt=0, description="optimizer steps")
    texts: int = Field(8000, ge=0, description="reading examples asked of each env's hook")
    batch_sequences: int = Field(32, gt=0, description="sequences per optimizer step")
    seq_len: int = Field(128, ge=16, description="tokens per packed sequence")
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    copy_fraction: float = Field(
        0.2, ge=0, le=1, description="share of each batch that is synthetic copy sequences"
    )
    copy_lengths: tuple[int, int] | None = Field(
        None,
        description="[min, max] half-length of the copy sequences, drawn per pair, pairs packed "
        "to seq_len (null: one pair of half seq_len // 2, which teaches a fixed-offset copy)",
    )
    seed: int = Field(0, description="seed of the envs' pretraining worlds and the batches")

    @field_validator("copy_lengths")
    @classmethod
    def _copy_lengths(
        cls, value: tuple[int, int] | None, info: ValidationInfo
    ) -> tuple[int, int] | None:
        if value is None:
            return value
        low, high = value
        seq_len = info.data.get("seq_len", 128)
        if not 1 <= low <= high <= seq_len // 2:
            raise ValueError(
                f"need 1 <= min <= max <= seq_len // 2 = {seq_len // 2}, got [{low}, {high}]"
            )
        return value


class SFTConfig(Section):
    """Supervised warm start on demonstrations collected through the rollout engine."""

    enabled: bool = False
    episodes: int = Field(256, gt=0, description="demonstration episodes to collect")
    demonstrators: dict[str, float] = Field(
        default_factory=lambda: {"expert": 1.0},
        description="policy specs that play the episodes, with weights (e.g. "
        "{expert: 0.4, closed-book: 0.6}); each episode is played by one of them",
    )
    seed_start: int = Field(500_000, description="seeds of the expert episodes (train split)")
    epochs: int = Field(2, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_sequences: int = Field(16, gt=0, description="sequences per optimizer step")
    warmup_steps: int = Field(0, ge=0)
    only_successful: bool = Field(True, description="train only on solved episodes")
    context_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the language-modelling loss on prompt and observation tokens "
        "(0: only the expert's actions are targets)",
    )

    @field_validator("demonstrators")
    @classmethod
    def _weighted(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(w <= 0 for w in value.values()):
            raise ValueError("need at least one demonstrator, every weight > 0")
        return value


class TrainConfig(Section):
    """A training run: model, envs, rollouts, credit assignment, optimisation, bookkeeping."""

    name: str = Field("run", description="run name; the run folder is output_dir/name-TIMESTAMP")
    output_dir: str = "runs"
    seed: int = 0
    total_steps: int = Field(20, ge=0, description="RL steps (rollout batch + update)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    envs: list[EnvConfig] = Field(default_factory=lambda: [EnvConfig(id="search-v0")])
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    value: ValueConfig = Field(default_factory=ValueConfig, validate_default=True)
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("envs")
    @classmethod
    def _some_env(cls, value: list[EnvConfig]) -> list[EnvConfig]:
        if not value:
            raise ValueError("at least one env is needed")
        return value

    @field_validator("value")
    @classmethod
    def _value_head_iff_read(cls, value: ValueConfig, info: ValidationInfo) -> ValueConfig:
        algorithm = info.data.get("algorithm")
        if algorithm is None:  # the algorithm section is invalid, and reported
            return value
        needed = uses_value_head(algorithm)
        if needed and not value.enabled:
            raise ValueError(
                f"algorithm.estimator {algorithm.estimator} reads per-turn values: set "
                "value.enabled: true"
            )
        if value.enabled and not needed:
            raise ValueError(
                "a value head is read only by estimator ppo (or empg with base ppo), not "
                f"{algorithm.estimator}: set value.enabled: false"
            )
        return value


# ---------------------------------------------------------------------------------------------
# Loading, overrides, saving
# ---------------------------------------------------------------------------------------------
def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        lines.append(f"  {path}: {msg}")
    return f"{source}: invalid training config\n" + "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` → (["a", "b", "c"], value parsed as a YAML scalar or flow value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY.PATH=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path...] = value``, creating mappings and indexing lists by integer keys."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(path[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {'.'.join(path)}: no list item {where}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(path)}: {where} is not a mapping")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})


def load_config(
    source: str | Path | dict[str, Any] | TrainConfig | None = None,
    overrides: list[str] | None = None,
) -> TrainConfig:
    """A validated :class:`TrainConfig` from a YAML path, a dict or a config, plus overrides."""
    label = "config"
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, TrainConfig):
        data = source.model_dump(mode="json")
    elif isinstance(source, dict):
        data = yaml.safe_load(yaml.safe_dump(source))
    else:
        label = str(source)
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{label}: no such config file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{label}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{label}: the top level must be a mapping")
    if overrides:
        data = _with_defaults(data)
        for text in overrides:
            apply_override(data, *parse_override(text))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, label)) from None


def _with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill list sections with their defaults so ``envs.0.x=...`` works on a sparse file."""
    if "envs" not in data:
        data = {**data, "envs": [e.model_dump(mode="json") for e in TrainConfig().envs]}
    return data


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the fully resolved config (every default made explicit) as YAML."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def config_reference() -> str:
    """Markdown table of every key, its default and description (docs/training.md holds it)."""
    rows = ["| key | default | description |", "|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        defaults = model()  # type: ignore[call-arg]
        for name, field in model.model_fields.items():
            ann = field.annotation
            key = f"{prefix}{name}"
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, key + ".")
                continue
            value = getattr(defaults, name)
            if isinstance(value, list) and value and isinstance(value[0], BaseModel):
                value = [v.model_dump(mode="json") for v in value]
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{key}` | `{value!r}` | {description} |")

    walk(TrainConfig, "")
    return "\n".join(rows)
