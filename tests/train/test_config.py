"""Training configs: typed validation naming bad keys, --set overrides, resolved config saved."""

from pathlib import Path

import pytest
import yaml

from agentenv.train.config import (
    ConfigError,
    TrainConfig,
    config_reference,
    load_config,
    parse_override,
    save_config,
)


def write(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_validate():
    cfg = load_config(None)
    assert isinstance(cfg, TrainConfig)
    assert cfg.loss.agg_mode == "token-mean"
    assert cfg.envs[0].id == "search-v0"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"optim": {"lrr": 1e-3}}, "optim.lrr: unknown key"),
        ({"loss": {"agg_mode": "sum"}}, "loss.agg_mode"),
        ({"loss": {"kl_kind": "k4"}}, "loss.kl_kind"),
        ({"loss": {"dual_clip": 0.5}}, "loss.dual_clip"),
        ({"model": {"lora": {"r": 0}}}, "model.lora.r"),
        ({"envs": [{"id": "search-v0", "kwarg": {}}]}, "envs.0.kwarg: unknown key"),
        ({"envs": []}, "envs"),
        ({"rollout": {"group_size": "many"}}, "rollout.group_size"),
        ({"totl_steps": 3}, "totl_steps: unknown key"),
        ({"algorithm": {"estimator": "ppo"}}, "value: algorithm.estimator ppo reads per-turn"),
        (
            {"algorithm": {"estimator": "empg", "options": {"base": "ppo"}}},
            "value: algorithm.estimator empg reads per-turn values: set value.enabled: true",
        ),
        ({"value": {"enabled": True}}, "value: a value head is read only by estimator ppo"),
        ({"value": {"clip": 0}}, "value.clip"),
        (
            {"model": {"dtype": "bfloat16", "mixed_precision": True}},
            "model.mixed_precision: fp32 master weights need model.dtype auto or float32",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path, data, named):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert named in str(err.value)
    assert str(tmp_path / "c.yaml") in str(err.value)


@pytest.mark.parametrize(
    ("algorithm", "named"),
    [
        ({"estimator": "nope"}, "algorithm.estimator: unknown estimator 'nope'; known: grpo,"),
        (
            {"estimator": "igpo", "options": {"gama": 1.0}},
            "algorithm.options.gama: unknown option of igpo (allowed: info_gain, gamma, norm,",
        ),
        (
            {"estimator": "igpo", "options": {"norm": "both"}},
            "algorithm.options.norm: Input should be 'joint' or 'separate'",
        ),
        ({"estimator": "grpo", "options": {"eps": "tiny"}}, "algorithm.options.eps: Input should"),
        ({"estimator": "a2tgpo", "options": {"has_ig": [1]}}, "algorithm.options.has_ig: unknown"),
        (
            {"estimator": "empg", "options": {"step_entropy": "e", "base": "empg"}},
            "algorithm.options.base: empg modulates another estimator",
        ),
        (
            {"estimator": "empg", "options": {"step_entropy": "e", "base_options": {"k": 1}}},
            "algorithm.options.base_options.k: unknown option of grpo (allowed: std, eps,",
        ),
        (
            {"info_gain": {"options": {"bridg": "<answer>"}}},
            "algorithm.info_gain.options.bridg: unknown option of info gain (allowed: bridge,",
        ),
        (
            {"info_gain": {"options": {"mode": "diff"}}},
            "algorithm.info_gain.options.mode: Input should be 'prob_diff' or 'log_prob_diff'",
        ),
        (
            {"judge": {"policy": "tiny", "options": {"mod": "expected"}}},
            "algorithm.judge.options.mod: unknown option of judge (allowed: template,",
        ),
        ({"prm": {"kind": "dpo"}}, "algorithm.prm.kind: Input should be 'prime' or 'oprl'"),
        ({"spa": {"steps": 0}}, "algorithm.spa.steps: Input should be greater than 0"),
    ],
)
def test_estimator_and_reward_options_are_checked_at_load(tmp_path, algorithm, named):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"algorithm": algorithm}))
    assert named in str(err.value)


def test_good_estimator_options_load_as_given():
    options = {"gamma": 0.9, "episode_stat": "steps", "similarity": 0.5}
    cfg = load_config({"algorithm": {"estimator": "gigpo", "options": options}})
    assert cfg.algorithm.options == options
    empg = {"step_entropy": "entropy", "base": "gigpo", "base_options": {"gamma": 0.5}}
    assert load_config({"algorithm": {"estimator": "empg", "options": empg}}).algorithm.options
    # EMPG reads the rollout's per-turn entropy by default: no option to name
    assert load_config({"algorithm": {"estimator": "empg"}}).algorithm.options == {}


def test_ppo_loads_with_its_value_head_and_gae_options():
    cfg = load_config(
        {"algorithm": {"estimator": "ppo", "options": {"lam": 0.95, "bootstrap": True}}},
        ["value.enabled=true", "value.clip=null", "loss.recompute_old_logprobs=true"],
    )
    assert cfg.value.enabled and cfg.value.clip is None and cfg.value.coef == 0.5
    assert cfg.algorithm.options == {"lam": 0.95, "bootstrap": True}
    assert cfg.loss.recompute_old_logprobs
    with pytest.raises(ConfigError, match="algorithm.options.lamda: unknown option of ppo"):
        load_config({"algorithm": {"estimator": "ppo", "options": {"lamda": 1}}})


def test_overrides_are_typed_and_reach_lists(tmp_path):
    path = write(tmp_path, {"envs": [{"id": "search-v0", "kwargs": {"max_hops": 2}}]})
    cfg = load_config(
        path,
        [
            "optim.lr=3e-4",
            "loss.dual_clip=3",
            "envs.0.kwargs.max_hops=1",
            "model.lora.enabled=true",
            "model.lora.target_modules=[q_proj, v_proj]",
            "loss.norm_length=null",
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.loss.dual_clip == 3.0
    assert cfg.envs[0].kwargs == {"max_hops": 1}
    assert cfg.model.lora.enabled is True
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]


def test_override_on_a_file_without_envs():
    cfg = load_config({"seed": 3}, ["envs.0.kwargs.max_turns=2"])
    assert cfg.envs[0].id == "search-v0" and cfg.envs[0].kwargs == {"max_turns": 2}


@pytest.mark.parametrize(
    ("override", "message"),
    [("optim.lr", "KEY.PATH=VALUE"), ("envs.5.id=x", "no list item envs.5"), ("seed.x=1", "seed")],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_override_value_is_yaml():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=hello world") == (["a"], "hello world")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["optim.lr=0.01", "algorithm.estimator=igpo"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert "micro_batch_tokens" in (tmp_path / "resolved.yaml").read_text()


def test_reference_lists_every_section():
    text = config_reference()
    for key in ("optim.lr", "loss.dual_clip", "model.lora.r", "sft.episodes", "eval.tasks"):
        assert f"`{key}`" in text


def test_the_quickstart_recipe_is_package_data_and_the_documented_copy_links_to_it():
    from pathlib import Path

    import agentenv.train
    from agentenv.train.quickstart import quickstart_config_path

    path = quickstart_config_path()
    assert path.parent == Path(agentenv.train.__file__).parent
    config = load_config(path)
    assert config.sft.enabled and config.eval.tasks >= 200
    documented = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    assert documented.resolve() == path.resolve()


def test_the_documented_reference_is_the_configs_own():
    """docs/training.md's configuration table is config_reference(): every key, default and
    description as the code has them."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    missing = [row for row in config_reference().splitlines() if row not in doc]
    assert not missing, "docs/training.md is missing or has stale rows:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")), ids=str
)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem and config.envs
