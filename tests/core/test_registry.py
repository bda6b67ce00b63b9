"""The registry on top of Gymnasium's, and the TextEnv contract's shared machinery."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium
import pytest

import agentenv
from agentenv.env import INFO_KEYS, TextEnv, UnicodeText
from agentenv.registry import UnknownEnvError, gymnasium_id, import_env_module

HERE = Path(__file__).parent


class EchoEnv(TextEnv):
    """Echoes the action; ends when the action is 'stop'."""

    description = "echo"

    async def _areset(self, *, seed, options):
        self.task = {"id": options.get("task", "t0")}
        return "say something", {"task_id": self.task["id"], "system_prompt": "echo", "anchor": ()}

    async def _astep(self, action):
        done = action == "stop"
        return action, float(done), done, False, {"anchor": (action,), "success": done}


def test_register_make_and_gymnasium_make():
    agentenv.register("echo-test-v0", f"{__name__}:EchoEnv", description="echo")
    assert "echo-test-v0" in [e.id for e in agentenv.list_envs()]
    env = agentenv.make("echo-test-v0")
    assert isinstance(env, EchoEnv)
    obs, info = env.reset(seed=1)
    assert obs == "say something"
    obs, reward, term, trunc, info = env.step("héllo ✓")
    assert obs == "héllo ✓" and not term
    assert info["action_valid"] is True and info["reward_components"] == {}
    assert env.step("stop")[2] is True
    env.close()
    wrapped = gymnasium.make("agentenv/echo-test-v0")
    assert wrapped.reset(seed=0)[0] == "say something"
    wrapped.close()


def test_unknown_id_lists_close_matches():
    with pytest.raises(UnknownEnvError, match="Did you mean: search-v0"):
        agentenv.make("serch-v0")


@pytest.fixture
def broken_envs_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_module_class_ids_register_on_first_use(broken_envs_importable):
    env_id = "broken_envs:GoodEnv"
    info = agentenv.env_info(env_id)
    assert (info.id, info.entry_point, info.description) == (env_id, env_id, "guess a number")
    assert info.expert is None
    env = agentenv.make(env_id)
    assert type(env).__name__ == "GoodEnv" and env.reset(seed=0)[0] == "Guess."
    env.close()
    assert env_id in [e.id for e in agentenv.list_envs()]
    assert gymnasium_id(env_id) == "agentenv/broken_envs.GoodEnv"
    wrapped = gymnasium.make(gymnasium_id(env_id))
    assert wrapped.reset(seed=0)[0] == "Guess."
    wrapped.close()


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("no_such_module_xyz:Env", "no module named 'no_such_module_xyz'"),
        ("broken_envs:Nope", "no attribute 'Nope' (TextEnv subclasses in it: GoodEnv, Raises"),
        ("broken_envs:PROMPT", "broken_envs.PROMPT is not a TextEnv subclass (it is a str object)"),
        ("broken_envs:BaseModel", "is not a TextEnv subclass (it is a class BaseModel)"),
        ("broken_envs:", "expected MODULE:CLASS"),
    ],
)
def test_module_class_id_errors_say_what_is_wrong(broken_envs_importable, env_id, message):
    with pytest.raises(UnknownEnvError, match=re.escape(message)):
        agentenv.make(env_id)


def test_only_a_missing_module_itself_is_an_unknown_env(tmp_path, monkeypatch):
    (tmp_path / "needs_missing_dependency.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        import_env_module("needs_missing_dependency")
    with pytest.raises(UnknownEnvError, match="no module named 'no_such_pkg_xyz'"):
        import_env_module("no_such_pkg_xyz.envs")


def test_unknown_constructor_arguments_list_the_known_ones():
    with pytest.raises(
        ValueError, match="takes no argument 'nope'; its arguments: service, split,"
    ):
        agentenv.make("search-v0", nope=1)


def test_unicode_text_space_accepts_any_string():
    space = UnicodeText(max_length=10)
    assert space.contains("日本語 ✓ \x00")
    assert not space.contains("x" * 11)
    assert not space.contains(3)
    assert isinstance(space.sample(), str)


def test_info_keys_documented():
    assert set(INFO_KEYS) == {
        "task_id", "ground_truth", "system_prompt", "reward_components",
        "action_valid", "anchor", "success", "messages", "tool_calls",
    }  # fmt: skip


async def test_async_api_and_non_string_action():
    env = EchoEnv()
    obs, info = await env.areset(seed=0, options={"task": "abc"})
    assert info["task_id"] == "abc" and env.task == {"id": "abc"}
    obs, *_ = await env.astep(None)
    assert obs == ""
    assert env.turn == 1
