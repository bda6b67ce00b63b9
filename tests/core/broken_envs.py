"""Envs for the checker and the CLI tests: one that keeps the TextEnv contract, and variants that
each break one rule of it (or fail to build)."""

from __future__ import annotations

import re
import threading

from pydantic import BaseModel, PositiveInt

from agentenv import TextEnv, register

PROMPT = "Guess the number between <guess> and </guess>."
GUESS = re.compile(r"<guess>\s*(\d{1,3})\s*</guess>")
TEST_TASKS = (1, 3, 5, 7)


class GoodEnv(TextEnv):
    """Guess a number from 0 to 9 in at most 4 turns; a finite test split of 4 tasks."""

    description = "guess a number"

    def splits(self) -> dict[str, int | None]:
        return {"train": None, "test": 4}

    def task_ids(self, split: str) -> list[str]:
        if self.check_split(split) is None:
            return super().task_ids(split)
        return [str(task) for task in TEST_TASKS]

    async def _areset(self, *, seed, options):
        if options.get("task") is not None:
            self.task = int(options["task"])
        elif options.get("split") == "test":
            self.task = int(self.np_random.choice(TEST_TASKS))
        else:
            self.task = int(self.np_random.integers(10))
        return "Guess.", {"task_id": str(self.task), "system_prompt": PROMPT, "anchor": 0}

    async def _astep(self, action):
        guess = self.parse(action)
        right = guess == self.task
        info = {
            "action_valid": guess is not None,
            "anchor": self.turn + 1,
            "reward_components": {"right": float(right)},
            "success": right,
        }
        out_of_turns = not right and self.turn >= 3
        return ("Right." if right else "No."), float(right), right, out_of_turns, info

    def parse(self, action: str) -> int | None:
        match = GUESS.search(action)
        return None if match is None else int(match[1])


class RaisesOnBadAction(GoodEnv):
    def parse(self, action: str) -> int | None:
        guess = super().parse(action)
        if guess is None:
            raise ValueError("cannot parse the action")
        return guess


class ForgetsTaskId(GoodEnv):
    async def _areset(self, *, seed, options):
        observation, info = await super()._areset(seed=seed, options=options)
        del info["task_id"]
        return observation, info


class UnhashableAnchor(GoodEnv):
    async def _astep(self, action):
        observation, reward, terminated, truncated, info = await super()._astep(action)
        info["anchor"] = [self.turn]
        return observation, reward, terminated, truncated, info


class NeverEnds(GoodEnv):
    async def _astep(self, action):
        observation, reward, _, _, info = await super()._astep(action)
        return observation, reward, False, False, info


class StepsAfterTheEnd(GoodEnv):
    async def astep(self, action):
        self._episode_open = True  # the bug: a finished episode takes more steps
        return await super().astep(action)


class Unpicklable(GoodEnv):
    async def _areset(self, *, seed, options):
        self.lock = threading.Lock()
        return await super()._areset(seed=seed, options=options)


class UndeclaredComponent(GoodEnv):
    reward_components = ("wrong",)  # it reports "right"


class MiscountedSplit(GoodEnv):
    def splits(self) -> dict[str, int | None]:
        return {"train": None, "test": 5}


class _Knobs(BaseModel):
    size: PositiveInt = 3


class StrictKnobs(GoodEnv):
    """Validates its constructor arguments with pydantic."""

    def __init__(self, size: int = 3, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        self.size = _Knobs(size=size).size


class CrashesOnBuild(GoodEnv):
    def __init__(self, render_mode: str | None = None) -> None:
        raise RuntimeError("boom while building")


register("guess-v0", "broken_envs:GoodEnv", description=GoodEnv.description)
