"""Fan-out beyond one process: env services and rollout workers on a Ray cluster.

:mod:`agentenv.scale.ray` holds the machinery (``RayFanout``, ``RayRolloutEngine``); it is the
only module that imports ``ray``, an optional extra (``pip install 'rl-agentenv[ray]'``), so it
is imported only where a run asks for Ray (``--ray``, a training config's ``ray.address``).
This package itself imports nothing optional. See ``docs/scale.md``.
"""

from __future__ import annotations

import importlib

INSTALL_HINT = "Ray fan-out needs the ray extra: pip install 'rl-agentenv[ray]'"


def require_ray() -> None:
    """Raise :class:`ImportError` naming the extra when ``ray`` cannot be imported."""
    try:
        importlib.import_module("ray")
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
