"""A training run's Ray fan-out, from its ``ray:`` section (imported only when the section names
an address: it imports ``ray``, an optional extra).

The rollout workers play with a served policy when the run has ``model.server`` (the trained
LoRA adapter reaches the server through :class:`~agentenv.train.sync.ServerSync`), else with
their own copy of the model: the run's starting model folder is shipped to them through the
object store, and after every update :meth:`~agentenv.scale.ray.RayFanout.push` sends them the
new weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentenv.scale.ray import LOCAL, PolicySource, RayFanout
from agentenv.train.config import TrainConfig


def start_fanout(
    config: TrainConfig, start: Path, tokenizer: Any, *, served_as: str | None = None
) -> RayFanout:
    """Connect to ``config.ray.address`` and start the rollout workers: on the policy served as
    ``served_as`` at ``config.model.server``, or (None) on the model folder ``start``."""
    if served_as is not None:
        source = PolicySource(f"openai:{config.model.server}#{served_as}", {"tokenizer": tokenizer})
    else:
        model = config.model
        source = PolicySource.shipped(
            start,
            dtype=model.dtype,
            max_batch_size=model.max_batch_size,
            batch_invariant=model.batch_invariant,
            prefix_cache_mib=model.prefix_cache_mib,
        )
    ray = config.ray
    return RayFanout.started(
        source,
        ray.address or LOCAL,
        workers=ray.workers,
        cpus_per_worker=ray.cpus_per_worker,
        gpus_per_worker=ray.gpus_per_worker,
        service_replicas=ray.service_replicas,
        cpus_per_service=ray.cpus_per_service,
        services=ray.services,
        max_retries=ray.max_retries,
    )
