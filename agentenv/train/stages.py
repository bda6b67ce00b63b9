"""The pipeline of a run: the run folder and its saved config, then the warm-up stages — the
starting model, the reading warm-up (``RUN/pretrain``) and SFT (``RUN/sft``), each run once per
run folder — whose model the RL stage (:mod:`agentenv.train.loop`) starts from. Every stage
loads a model, optimises its own loss with its own metrics, and saves a model folder.
:func:`sft` is ``agentenv sft``: the warm-up alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agentenv.launch import service_scope
from agentenv.planner import TaskSource
from agentenv.runfiles import CONFIG
from agentenv.train.config import ConfigError, TrainConfig, load_config, save_config
from agentenv.train.episodes import probe_envs
from agentenv.train.model import FINAL_MODEL, model_path, quiet_transformers, seed_everything
from agentenv.train.pretrain import PRETRAIN_DIR, run_pretrain
from agentenv.train.sft import SFT_DIR, run_sft


def make_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.output_dir) / f"{config.name}-{stamp}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir, n = Path(f"{base}-{n}"), n + 1
    run_dir.mkdir(parents=True)
    return run_dir


def prepare_run(
    config: str | Path | dict | TrainConfig | None,
    overrides: list[str] | None = None,
    resume: Path | None = None,
) -> tuple[TrainConfig, Path]:
    """The validated config and the run folder (new, or ``resume`` with its saved config)."""
    if resume is not None:
        run_dir = Path(resume)
        saved = run_dir / CONFIG
        if not saved.is_file():
            raise ConfigError(f"--resume {run_dir}: no {CONFIG} there")
        cfg = load_config(saved, overrides)
    else:
        cfg = load_config(config, overrides)
        run_dir = make_run_dir(cfg)
    save_config(cfg, run_dir / CONFIG)
    return cfg, run_dir


@dataclass(frozen=True)
class WarmUpStage:
    """A stage before RL: load the model at ``start``, optimise the stage's own loss, save the
    result to ``RUN/<folder>/model`` (and its metrics beside it). ``run(config, out_dir, start,
    sources)`` returns the saved model's folder."""

    name: str
    folder: str
    enabled: Callable[[TrainConfig], bool]
    run: Callable[[TrainConfig, Path, Path, list[TaskSource]], Awaitable[Path]]

    def output(self, run_dir: Path) -> Path:
        return run_dir / self.folder / FINAL_MODEL

    def done(self, run_dir: Path) -> bool:
        return (self.output(run_dir) / "config.json").is_file()


async def _pretrain(
    config: TrainConfig, out_dir: Path, start: Path, sources: list[TaskSource]
) -> Path:
    return run_pretrain(config, out_dir, start)


PRETRAIN = WarmUpStage("pretrain", PRETRAIN_DIR, lambda c: c.pretrain.enabled, _pretrain)
SFT = WarmUpStage("sft", SFT_DIR, lambda c: c.sft.enabled, run_sft)
WARM_UP: tuple[WarmUpStage, ...] = (PRETRAIN, SFT)
"""The stages before RL, in order: the reading warm-up (``pretrain``), then ``sft``."""


async def warm_start(
    config: TrainConfig,
    run_dir: Path,
    sources: list[TaskSource],
    stages: tuple[WarmUpStage, ...] = WARM_UP,
) -> Path:
    """The model RL starts from: ``model.spec`` (or ``init_from``), then each enabled stage of
    ``stages`` in order on the previous one's model. Each stage runs once per run folder: a
    resumed run reuses its saved model."""
    start = model_path(config)
    for stage in stages:
        if not stage.enabled(config):
            continue
        if not stage.done(run_dir):
            seed_everything(config.seed)
            await stage.run(config, run_dir / stage.folder, start, sources)
        start = stage.output(run_dir)
    return start


def sft(
    config: str | Path | dict | TrainConfig | None = None, overrides: list[str] | None = None
) -> Path:
    """``agentenv sft``: SFT the configured model (after pretraining, when enabled) on
    demonstrations; the run folder holds ``model/``."""
    cfg, run_dir = prepare_run(config, overrides)
    quiet_transformers()

    async def main() -> None:
        async with service_scope():
            sources, _ = await probe_envs(cfg)
            start = await warm_start(cfg, run_dir, sources, (PRETRAIN,))
            seed_everything(cfg.seed)
            await run_sft(cfg, run_dir, start, sources)

    asyncio.run(main())
    return run_dir
