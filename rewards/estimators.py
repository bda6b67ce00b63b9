"""Select an advantage estimator by name and feed it from a :class:`TurnTable`.

``compute_advantages(method, table, **options)`` returns one advantage per table row (turn);
outcome estimators compute one value per trajectory and broadcast it to all of its turns.
What each method reads from the table, and its options (all keyword arguments of the estimator
in :mod:`agentenv.rewards.advantages` unless listed):

=====================  ========================================================================
method                 inputs from the table
=====================  ========================================================================
grpo, drgrpo, rloo     ``outcome`` per trajectory (the episode return), grouped by ``traj_group``
discounted_returns     ``reward`` per turn; option ``gamma`` (default 1.0)
mt_grpo                outcome = the last turn's reward, turn reward = the sum of earlier turns'
                       rewards, tool call = more than one turn; turn 0 gets the first-turn
                       advantage, later turns the later-turn one
igpo                   ``reward`` on each trajectory's last turn (the answer); option
                       ``info_gain`` (per-row array, or the name of a reward component; default
                       ``"info_gain"``) on the other turns
a2tgpo                 ``info_gain`` as for igpo (ignored on last turns), ``outcome`` per trajectory
gigpo, hgpo            ``reward`` per turn as step reward, ``anchor`` per turn
empg                   ``entropy`` per turn (the rollout's mean token entropy of each action), or
                       option ``step_entropy`` (per-row array or component name) instead;
                       option ``base`` (another method name, default ``"grpo"``) and
                       ``base_options`` give the advantages it modulates
ppo                    ``reward`` per turn; option ``values`` (per-row array or component name,
                       default ``"value"``: V of the state each turn acts from); with option
                       ``bootstrap`` the ``"end_value"`` component (V after the last turn on
                       truncated trajectories, 0 on terminated ones) ends each trajectory
=====================  ========================================================================

Each method's options are typed by the signatures they end up in (:class:`Estimator`), so a
config can be checked when it is loaded (:func:`validate_options`) instead of at the first update.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agentenv.rewards import advantages as adv
from agentenv.trajectory import TurnTable

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "check_options",
    "compute_advantages",
    "compute_advantages_with_clip",
    "options_model",
    "validate_options",
    "value_targets",
]

PerRow = str | Sequence[float]
"""A per-row input option: the name of a reward component, or one value per table row."""

VALUE = "value"
"""The component ``ppo`` reads its turn values from by default."""
END_VALUE = "end_value"
"""The component ``ppo`` reads each trajectory's bootstrap value from, with ``bootstrap``."""


def _per_row(table: TurnTable, value: PerRow, name: str) -> np.ndarray:
    if isinstance(value, str):
        if value not in table.components:
            known = ", ".join(sorted(table.components)) or "none"
            raise ValueError(f"{name}: no reward component {value!r} (components: {known})")
        return np.asarray(table.components[value], dtype=np.float64)
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != table.traj.shape:
        raise ValueError(f"{name}: expected {table.traj.shape[0]} rows, got shape {arr.shape}")
    return arr


def _first_turn(table: TurnTable) -> np.ndarray:
    """Bool per row: the row is its trajectory's first turn."""
    first = np.full(table.outcome.shape[0], np.iinfo(np.int64).max)
    np.minimum.at(first, table.traj, table.turn)
    return table.turn == first[table.traj]


def _outcome(method: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def run(table: TurnTable, **options: Any) -> np.ndarray:
        return method(table.outcome, table.traj_group, **options)[table.traj]

    return run


def _discounted(table: TurnTable, *, gamma: float = 1.0) -> np.ndarray:
    return adv.discounted_returns(table.reward, table.traj, table.turn, gamma=gamma)


def _mt_grpo(table: TurnTable, **options: Any) -> np.ndarray:
    n_traj = table.outcome.shape[0]
    last = table.last_turn
    outcome = np.bincount(table.traj[last], table.reward[last], minlength=n_traj)
    turn_reward = np.bincount(table.traj[~last], table.reward[~last], minlength=n_traj)
    has_tool = np.bincount(table.traj, minlength=n_traj) > 1
    first, later = adv.mt_grpo(turn_reward, outcome, table.traj_group, has_tool, **options)
    return np.where(_first_turn(table), first[table.traj], later[table.traj])


def _igpo(table: TurnTable, *, info_gain: PerRow = "info_gain", **options: Any) -> np.ndarray:
    last = table.last_turn
    ig = _per_row(table, info_gain, "info_gain")
    rewards = np.where(last, table.reward, np.nan_to_num(ig))
    return adv.igpo(rewards, last, table.group, table.traj, table.turn, **options)


def _a2tgpo_pair(
    table: TurnTable, *, info_gain: PerRow = "info_gain", **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    last = table.last_turn
    ig = _per_row(table, info_gain, "info_gain")
    has_ig = ~last & np.isfinite(ig)
    outcome = table.outcome[table.traj]
    return adv.a2tgpo(
        np.where(has_ig, ig, 0.0),
        outcome,
        table.group,
        table.traj,
        table.turn,
        has_ig=has_ig,
        **options,
    )


def _gigpo(table: TurnTable, **options: Any) -> np.ndarray:
    return adv.gigpo(table.reward, table.group, table.traj, table.turn, table.anchor, **options)


def _hgpo(table: TurnTable, **options: Any) -> np.ndarray:
    return adv.hgpo(table.reward, table.group, table.traj, table.turn, table.anchor, **options)


def _a2tgpo(table: TurnTable, **options: Any) -> np.ndarray:
    return _a2tgpo_pair(table, **options)[0]


def _empg(
    table: TurnTable,
    *,
    step_entropy: PerRow | None = None,
    base: str = "grpo",
    base_options: dict[str, Any] | None = None,
    **options: Any,
) -> np.ndarray:
    _check_base(base)
    base_adv = compute_advantages(base, table, **(base_options or {}))
    if step_entropy is None:
        entropy = np.asarray(table.entropy, dtype=np.float64)
        missing = int(np.count_nonzero(~np.isfinite(entropy)))
        if missing:
            raise ValueError(
                f"step_entropy: {missing} of {entropy.size} turns have no recorded entropy (the "
                "policy reported no log-probabilities, or the trajectories predate Turn.entropy)"
            )
    else:
        entropy = _per_row(table, step_entropy, "step_entropy")
    return adv.empg(base_adv, entropy, table.traj, table.turn, **options)


def _ppo_pair(
    table: TurnTable, *, values: PerRow = VALUE, bootstrap: bool = False, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """GAE advantages and value targets over turns; ``bootstrap``: a trajectory ends at the
    :data:`END_VALUE` component (V after a truncated end), otherwise at 0."""
    v = _per_row(table, values, "values")
    end = _per_row(table, END_VALUE, "end_value") if bootstrap else None
    return adv.gae(table.reward, v, table.traj, table.turn, end_value=end, **options)


def _ppo(table: TurnTable, **options: Any) -> np.ndarray:
    return _ppo_pair(table, **options)[0]


def value_targets(table: TurnTable, **options: Any) -> np.ndarray:
    """The ``ppo`` estimator's value targets R_t = A_t + V_t (never whitened), per table row."""
    if table.traj.size == 0:
        return np.zeros(0)
    return _ppo_pair(table, **options)[1]


def _check_base(base: str) -> str:
    if base == "empg" or base not in ESTIMATORS:
        known = ", ".join(m for m in ESTIMATORS if m != "empg")
        raise ValueError(f"empg modulates another estimator ({known}), got base={base!r}")
    return base


def _check_base_options(
    value: dict[str, Any] | None, info: ValidationInfo
) -> dict[str, Any] | None:
    if "base" in info.data:
        validate_options(info.data["base"], value or {})
    return value


# ---------------------------------------------------------------------------------------------
# the registry and its typed options
# ---------------------------------------------------------------------------------------------
def options_model(
    name: str,
    sources: Iterable[Callable[..., Any]],
    *,
    supplied: Iterable[str] = (),
    validators: dict[str, Any] | None = None,
) -> type[BaseModel]:
    """A pydantic model (unknown keys forbidden) of the options of ``sources``: their
    keyword-only parameters and defaulted parameters (a class: its constructor's), typed by
    their annotations, less ``supplied`` (filled in by the caller)."""
    fields: dict[str, Any] = {}
    for source in sources:
        hints = typing.get_type_hints(source)
        for param in inspect.signature(source).parameters.values():
            optional = (
                param.kind is param.POSITIONAL_OR_KEYWORD and param.default is not param.empty
            )
            if (param.kind is param.KEYWORD_ONLY or optional) and param.name not in supplied:
                default = ... if param.default is param.empty else param.default
                fields[param.name] = (hints.get(param.name, Any), default)
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        __validators__=validators or {},
        **fields,
    )


@dataclass(frozen=True)
class Estimator:
    """A method of :data:`ESTIMATORS`: ``adapter(table, **options)`` feeds the advantage
    functions ``sources`` from a table. Its options are the keyword-only parameters of the
    adapter and of every source, less ``supplied`` (which the adapter fills in)."""

    adapter: Callable[..., Any]
    sources: tuple[Callable[..., Any], ...] = ()
    supplied: tuple[str, ...] = ()
    validators: tuple[tuple[str, Any], ...] = ()

    def __call__(self, table: TurnTable, **options: Any) -> np.ndarray:
        return self.adapter(table, **options)

    @cached_property
    def options(self) -> type[BaseModel]:
        """The typed options (a pydantic model that forbids unknown keys)."""
        name = f"{self.adapter.__name__.strip('_')}_options"
        sources = (self.adapter, *self.sources)
        return options_model(
            name, sources, supplied=self.supplied, validators=dict(self.validators)
        )


_EMPG_CHECKS = (
    ("_base", field_validator("base")(_check_base)),
    ("_base_options", field_validator("base_options")(_check_base_options)),
)

ESTIMATORS: dict[str, Estimator] = {
    "grpo": Estimator(_outcome(adv.grpo), (adv.grpo,)),
    "drgrpo": Estimator(_outcome(adv.drgrpo), (adv.drgrpo,)),
    "rloo": Estimator(_outcome(adv.rloo), (adv.rloo,)),
    "discounted_returns": Estimator(_discounted),
    "mt_grpo": Estimator(_mt_grpo, (adv.mt_grpo,)),
    "igpo": Estimator(_igpo, (adv.igpo,)),
    "a2tgpo": Estimator(_a2tgpo, (_a2tgpo_pair, adv.a2tgpo), supplied=("has_ig",)),
    "gigpo": Estimator(_gigpo, (adv.gigpo,)),
    "hgpo": Estimator(_hgpo, (adv.hgpo,)),
    "empg": Estimator(_empg, (adv.empg,), validators=_EMPG_CHECKS),
    "ppo": Estimator(_ppo, (_ppo_pair, adv.gae), supplied=("end_value",)),
}


def validate_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if they are valid options of estimator ``method``; otherwise a pydantic
    ``ValidationError`` with one error per bad option, located at its key (an unknown key's
    error lists the allowed ones, a bad value's the allowed values or type)."""
    if method not in ESTIMATORS:
        raise ValueError(f"unknown estimator {method!r}; known: {', '.join(ESTIMATORS)}")
    return check_options(ESTIMATORS[method].options, options, method)


def check_options(model: type[BaseModel], options: dict[str, Any], owner: str) -> dict[str, Any]:
    """``options`` if ``model`` (an :func:`options_model`) accepts them; otherwise its
    ``ValidationError``, an unknown key's error naming ``owner`` and the allowed keys."""
    try:
        model.model_validate(options)
    except ValidationError as exc:
        errors = [_explained(error, owner, model) for error in exc.errors()]
        raise ValidationError.from_exception_data(exc.title, errors) from None
    return options


def _explained(error: Any, owner: str, model: type[BaseModel]) -> InitErrorDetails:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        kind = "unknown_option"
        message = f"unknown option of {owner} (allowed: {', '.join(model.model_fields)})"
    return {
        "type": PydanticCustomError(kind, "{message}", {"message": message}),
        "loc": error["loc"],
        "input": error["input"],
    }


def compute_advantages(method: str, table: TurnTable, **options: Any) -> np.ndarray:
    """Per-turn-row advantages of ``table`` by the estimator named ``method``."""
    if method not in ESTIMATORS:
        raise ValueError(f"method: unknown estimator {method!r}; known: {', '.join(ESTIMATORS)}")
    if table.traj.size == 0:
        return np.zeros(0)
    try:
        return ESTIMATORS[method](table, **options)
    except TypeError as exc:
        raise ValueError(f"{method}: bad options {sorted(options)}: {exc}") from exc


def compute_advantages_with_clip(
    method: str, table: TurnTable, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and per-turn clip-range scales (A²TGPO's adaptive clipping; 1 elsewhere)."""
    if method == "a2tgpo" and table.traj.size:
        return _a2tgpo_pair(table, **options)
    values = compute_advantages(method, table, **options)
    return values, np.ones_like(values)
