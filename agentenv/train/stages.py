"""The stages of a run before RL: the run folder and its saved config, and the warm start —
the starting model, then the reading warm-up (``RUN/pretrain``) and SFT (``RUN/sft``), each run
once per run folder. :func:`sft` is ``agentenv sft``: those stages alone."""

from __future__ import annotations

import asyncio
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


async def warm_start(
    config: TrainConfig, run_dir: Path, sources: list[TaskSource], *, sft: bool = True
) -> Path:
    """The model RL starts from: ``model.spec`` (or ``init_from``), then the enabled warm-up
    stages in order, pretraining (``RUN/pretrain``) and SFT (``RUN/sft``; skipped when ``sft`` is
    False). Each stage runs once per run folder: a resumed run reuses its saved model."""
    start = model_path(config)
    if config.pretrain.enabled:
        done = run_dir / PRETRAIN_DIR / FINAL_MODEL
        if not (done / "config.json").is_file():
            seed_everything(config.seed)
            run_pretrain(config, run_dir / PRETRAIN_DIR, start)
        start = done
    if sft and config.sft.enabled:
        done = run_dir / SFT_DIR / FINAL_MODEL
        if not (done / "config.json").is_file():
            seed_everything(config.seed)
            await run_sft(config, run_dir / SFT_DIR, start, sources)
        start = done
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
            start = await warm_start(cfg, run_dir, sources, sft=False)
            seed_everything(cfg.seed)
            await run_sft(cfg, run_dir, start, sources)

    asyncio.run(main())
    return run_dir
