"""An env module for CLI tests (loaded with ``agentenv --import flaky_env``): the episodes of odd
seeds fail in their first step like a crashed backend."""

from __future__ import annotations

from agentenv import TextEnv, register


class FlakyEnv(TextEnv):
    """Say anything; the episode ends after one turn. Odd seeds raise in ``step``."""

    async def _areset(self, *, seed, options):
        self.task = f"t{seed}"
        self.fail = bool((seed or 0) % 2)
        return "say anything", {"task_id": self.task, "system_prompt": "say anything"}

    async def _astep(self, action):
        if self.fail:
            raise RuntimeError("flaky backend lost the episode")
        return "", 1.0, True, False, {"success": True}


register("flaky-v0", f"{__name__}:FlakyEnv", description="fails on odd seeds")
