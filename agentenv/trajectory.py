"""Turn / Trajectory / Group: the token-faithful record of an episode.

A trajectory's ``token_ids`` are the exact ids the policy was fed and produced: the prompt
(system + first observation, rendered through the chat template), then for every turn the ids the
policy generated followed by the ids of the observation that came back. Three parallel arrays
describe each token:

- ``loss_mask``: 1 on generated tokens, 0 on prompt and observation tokens;
- ``turn_ids``: the turn a token belongs to (-1 for the prompt; a turn's observation carries
  the turn's index, it is what came back *after* that action);
- ``logprobs``: the policy's log-probability of each generated token (0.0 elsewhere).

``messages`` is the same episode as chat messages (OpenAI format): the system prompt, the first
observation, then per turn the assistant message (with its ``tool_calls`` in envs with native
tools) and what the env sent back (one observation, or one ``tool`` message per call).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agentenv.jsonl import iter_jsonl

Status = Literal["done", "truncated", "error"]


@dataclass
class Turn:
    """One action of the agent and what the env answered.

    ``entropy`` is the action's mean per-token entropy under the policy
    (:attr:`agentenv.policies.base.Completion.mean_entropy`: exact where the policy reports
    entropies, else −mean log π of the sampled tokens); None where unknown (no log-probabilities,
    or a record written before the field existed).
    """

    index: int
    action: str
    observation: str
    reward: float
    reward_components: dict[str, float] = field(default_factory=dict)
    action_valid: bool = True
    anchor: Any = None
    finish_reason: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    action_tokens: int = 0
    observation_tokens: int = 0
    gen_seconds: float = 0.0
    env_seconds: float = 0.0
    entropy: float | None = None


@dataclass
class Trajectory:
    """One episode, as the policy saw and produced it.

    ``status`` is ``"done"`` (the env terminated), ``"truncated"`` (a budget ran out; ``reason``
    says which: ``max_turns``, ``max_context_tokens``, ``env``), or ``"error"`` (a service failed;
    ``reason`` has the message; such episodes are reported but excluded from training).
    """

    traj_id: str
    group_id: str
    env_id: str
    task_id: str
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    turn_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_length: int = 0
    turns: list[Turn] = field(default_factory=list)
    status: Status = "done"
    reason: str = ""
    success: bool = False
    seed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)

    # -- building ----------------------------------------------------------------------------
    def append_tokens(
        self, ids: list[int], *, trainable: bool, turn: int, logprobs: list[float] | None = None
    ) -> None:
        """Append ``ids`` with their mask, turn index and log-probabilities."""
        self.token_ids.extend(ids)
        self.loss_mask.extend([int(trainable)] * len(ids))
        self.turn_ids.extend([turn] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    # -- views -------------------------------------------------------------------------------
    @property
    def reward(self) -> float:
        """The episode return: the sum of turn rewards."""
        return float(sum(t.reward for t in self.turns))

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def trainable(self) -> bool:
        """Errored episodes never reach the trainer."""
        return self.status != "error"

    @property
    def gen_seconds(self) -> float:
        return float(sum(t.gen_seconds for t in self.turns))

    @property
    def env_seconds(self) -> float:
        return float(sum(t.env_seconds for t in self.turns))

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-token arrays as numpy (ids int64, mask int8, turn int32, logprobs float32)."""
        return {
            "token_ids": np.asarray(self.token_ids, dtype=np.int64),
            "loss_mask": np.asarray(self.loss_mask, dtype=np.int8),
            "turn_ids": np.asarray(self.turn_ids, dtype=np.int32),
            "logprobs": np.asarray(self.logprobs, dtype=np.float32),
        }

    # -- serialization -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["turns"] = [Turn(**t) for t in data.get("turns", [])]
        return cls(**kwargs)


def jsonable(value: Any) -> Any:
    """``value`` with tuples and sets as lists, dict keys as strings, numpy scalars as Python
    numbers: what ``json.dumps`` takes (anchors are often tuples)."""
    if isinstance(value, (tuple, frozenset, set)):
        return [
            jsonable(v)
            for v in (sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value)
        ]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


BULKY_FIELDS = ("token_ids", "loss_mask", "turn_ids", "logprobs", "messages")
"""The per-token arrays and the chat: :func:`write_jsonl` writes them after every other field
(and a line's ``transcript`` after them), so a reader that wants an episode's summary and turns
can stop parsing a line at ``"token_ids"`` (``agentenv.view`` does)."""


def finite_list(values: Iterable[float]) -> list[float | None]:
    """``values`` as a list for JSON, which has no NaN or infinity: None where not finite."""
    return [float(v) if np.isfinite(v) else None for v in values]


def write_jsonl(
    trajectories: Iterable[Trajectory],
    path: str | Path,
    *,
    append: bool = False,
    transcript: Callable[[Trajectory], dict[str, Any]] | None = None,
) -> None:
    """Write one trajectory per line, :data:`BULKY_FIELDS` last; with ``transcript``, each line
    also gets a ``transcript`` key (last) holding what it returns for the trajectory
    (:func:`agentenv.transcript.build_transcript`)."""
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for t in trajectories:
            data = t.to_dict()
            line = {k: v for k, v in data.items() if k not in BULKY_FIELDS}
            line.update((k, data[k]) for k in BULKY_FIELDS)
            if transcript is not None:
                line["transcript"] = transcript(t)
            f.write(json.dumps(jsonable(line), ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> Iterator[Trajectory]:
    """Read trajectories written by :func:`write_jsonl`; a bad line raises naming its number."""
    for lineno, row in iter_jsonl(path):
        try:
            yield Trajectory.from_dict(row)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"{path}:{lineno}: not a trajectory record: {exc}") from exc


def anchor_key(anchor: Any) -> str:
    """A canonical, hashable string for an anchor (JSON round-trips turn tuples into lists)."""
    return json.dumps(jsonable(anchor), sort_keys=True, ensure_ascii=False)


@dataclass
class TurnTable:
    """Flat per-turn arrays over a batch of trajectories: the input of ``agentenv.rewards``.

    Row ``r`` is turn ``turn[r]`` of trajectory ``traj[r]`` (an index into the batch), in group
    ``group[r]`` (an integer id per distinct ``group_id``). ``entropy[r]`` is the turn's
    :attr:`Turn.entropy` (NaN where unknown; all NaN when a table is built without it).
    """

    group: np.ndarray
    traj: np.ndarray
    turn: np.ndarray
    reward: np.ndarray
    action_valid: np.ndarray
    anchor: list[str]
    components: dict[str, np.ndarray]
    outcome: np.ndarray  # per trajectory: the episode return
    traj_group: np.ndarray  # per trajectory: its group id
    entropy: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.entropy is None:
            self.entropy = np.full(self.traj.shape, np.nan)

    @property
    def last_turn(self) -> np.ndarray:
        """Bool per row: the row is its trajectory's last turn (its highest ``turn``)."""
        last = np.full(self.outcome.shape[0], np.iinfo(np.int64).min)
        np.maximum.at(last, self.traj, self.turn)
        return self.turn == last[self.traj]

    @classmethod
    def from_trajectories(cls, trajectories: list[Trajectory]) -> TurnTable:
        group_names = {g: i for i, g in enumerate(dict.fromkeys(t.group_id for t in trajectories))}
        rows = [(i, t, turn) for i, t in enumerate(trajectories) for turn in t.turns]
        names = sorted({k for _, _, turn in rows for k in turn.reward_components})
        return cls(
            group=np.array([group_names[t.group_id] for _, t, _ in rows], dtype=np.int64),
            traj=np.array([i for i, _, _ in rows], dtype=np.int64),
            turn=np.array([turn.index for _, _, turn in rows], dtype=np.int64),
            reward=np.array([turn.reward for _, _, turn in rows], dtype=np.float64),
            action_valid=np.array([turn.action_valid for _, _, turn in rows], dtype=bool),
            anchor=[anchor_key(turn.anchor) for _, _, turn in rows],
            components={
                k: np.array([turn.reward_components.get(k, 0.0) for _, _, turn in rows])
                for k in names
            },
            outcome=np.array([t.reward for t in trajectories], dtype=np.float64),
            traj_group=np.array([group_names[t.group_id] for t in trajectories], dtype=np.int64),
            entropy=np.array(
                [np.nan if turn.entropy is None else turn.entropy for _, _, turn in rows],
                dtype=np.float64,
            ),
        )
