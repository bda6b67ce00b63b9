"""Countdown: count down from N to 1, one number per turn, each between <say> and </say>."""

import re

from agentenv import TextEnv, register

SYSTEM_PROMPT = (
    "Count down to 1, one number per message, written between <say> and </say>, "
    "for example <say> 7 </say>."
)
SAY = re.compile(r"<say>\s*(-?\d{1,9})\s*</say>")


class Countdown(TextEnv):
    """Count down from N to 1, one number per turn (reward 1/N per right number).

    Args:
        max_start: training tasks start from 2 to ``max_start``; test tasks from
            ``max_start + 1`` to ``2 * max_start`` (longer countdowns than any seen in training).
    """

    description = "count down from N to 1, one number per turn"
    stop_strings = ("</say>",)

    def __init__(self, max_start: int = 6, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        self.max_start = max_start

    def splits(self) -> dict[str, int | None]:
        return {"train": None, "test": None}  # procedural: the seed draws a task

    async def _areset(self, *, seed, options):
        if options.get("task") is not None:  # a task id is its start number
            self.task = int(options["task"])
        else:
            test = options.get("split") == "test"
            low, high = (self.max_start + 1, 2 * self.max_start) if test else (2, self.max_start)
            self.task = int(self.np_random.integers(low, high + 1))
        self.next = self.task
        info = {"task_id": str(self.task), "system_prompt": SYSTEM_PROMPT, "anchor": self.next}
        return f"Count down from {self.task}.", info

    async def _astep(self, action):
        said = SAY.search(action)
        right = said is not None and int(said[1]) == self.next
        if right:
            self.next -= 1
        solved = self.next == 0
        out_of_turns = self.turn + 1 >= self.task + 2
        if said is None:
            observation = "Write one number between <say> and </say>."
        else:
            observation = "Right." if right else f"No: the next number is {self.next}."
        info = {
            "action_valid": said is not None,
            "reward_components": {"right": float(right)},
            "anchor": self.next,
            "success": solved,
        }
        return observation, float(right) / self.task, solved, out_of_turns and not solved, info


register("countdown-v0", "countdown:Countdown", description=Countdown.description)
