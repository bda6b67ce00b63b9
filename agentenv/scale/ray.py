"""Env services and rollout workers as Ray actors, behind RolloutEngine's interface.

What runs where (``docs/scale.md``):

- the **driver** (``agentenv eval``/``train``) plans the episodes, consumes the trajectories and,
  in training, owns the learner; :class:`RayRolloutEngine` is its engine: ``run(requests,
  on_episode=...)`` returns the trajectories in request order, like
  :class:`~agentenv.rollout.RolloutEngine`;
- each **rollout worker** (:class:`RolloutWorker`, one actor per slot, spread over the nodes)
  runs a :class:`~agentenv.rollout.RolloutEngine` over the episodes the driver hands it, with
  its own copy of the policy: loaded with :func:`~agentenv.policies.specs.load_policy` from a
  spec (an ``openai:URL#MODEL`` spec is a served policy; a model folder's files can be shipped
  through the object store, :meth:`PolicySource.shipped`);
- each **service actor** (:class:`ServiceActor`) hosts one env family's FastAPI app with uvicorn
  on its node's address. :class:`ServiceDirectory` starts them on first use, per (factory,
  config), ``service_replicas`` of them spread over the nodes. A worker's env whose service is
  in-process or ``"local"`` is made with ``service="local"`` and, through
  :class:`DirectoryPool`, connects to a replica's URL: the remote-URL mode of
  :mod:`agentenv.service`, with its client, retries and circuit breakers.

Episodes go one by one to the live worker with the fewest in flight (at most the rollout
config's ``max_concurrent_episodes`` each). Failures:

- a worker that dies (its process killed, its node lost) is marked dead; each episode it had
  not returned is played again from the start on another live worker, at most ``max_retries``
  times, then comes back with status ``error`` and a reason naming the dead worker — never lost,
  never waited on forever;
- a service actor that dies is restarted (up to ``max_service_restarts`` times per replica) on
  a new port; episodes that were talking to it end as ``error`` with the client's
  :class:`~agentenv.service.EnvServiceError`, which names its URL; new episodes get the new one.

Weights (training, policy in the workers): :meth:`RayFanout.push` (the
:class:`~agentenv.train.sync.WeightSync` interface) puts the trained weights in the object store
once per update — the full ``state_dict``, or with LoRA the adapter folder — and every worker
loads them under its policy's weight lock. A served policy gets them from
:class:`~agentenv.train.sync.ServerSync` instead.

:meth:`RayFanout.close` (also leaving ``with``) kills every actor and disconnects; with
``address="local"`` that stops the cluster ``ray.init`` started.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import uvicorn

from agentenv.launch import ServicePool, service_scope
from agentenv.policies.base import Policy
from agentenv.policies.specs import load_policy
from agentenv.registry import EnvInfo, env_class, env_info, list_envs, register
from agentenv.rollout import EpisodeRequest, RolloutConfig, RolloutEngine, play_all
from agentenv.scale import INSTALL_HINT
from agentenv.service import EnvServiceError, build_served_app, config_key
from agentenv.trajectory import Trajectory

try:
    import ray
    from ray.exceptions import RayActorError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(f"{INSTALL_HINT} ({exc})") from exc

WORKER = "worker"
"""``Trajectory.metadata`` key: where the episode was played (``name``, ``node``, ``host``,
``pid`` of its rollout worker)."""
RETRIED = "retried_after"
"""``Trajectory.metadata`` key: the workers that died while playing this episode before it was
played again (absent when none did)."""
LOCAL = "local"
"""The ``address`` that starts a private local cluster for the run (stopped with it)."""
START_TIMEOUT = 300.0
"""Seconds an actor may take to start (a pending actor waits for resources the cluster lacks)."""
ACTOR_CONCURRENCY = 4096
"""Concurrent calls one async actor serves (episodes in flight on a worker are capped lower, by
the rollout config's ``max_concurrent_episodes``)."""
_IN_PROCESS_MODES = (None, "in-process", "local")


# ---------------------------------------------------------------------------------------------
# What a worker plays with
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicySource:
    """The policy of every rollout worker: ``load_policy(spec, **kwargs)`` in the worker.

    ``files`` (from :meth:`shipped`): a model folder's files, written to a temporary folder on
    the worker and loaded from there, so the driver's folder need not exist on other nodes.
    """

    spec: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] | None = None

    @classmethod
    def shipped(cls, folder: str | os.PathLike[str], **kwargs: Any) -> PolicySource:
        """The model folder ``folder``, its files carried through the object store."""
        root = Path(folder)
        files = {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }
        return cls(root.name, kwargs, files)

    @property
    def size(self) -> int:
        """Bytes of shipped files (0: the spec is resolved on the worker)."""
        return sum(len(b) for b in (self.files or {}).values())

    def load(self) -> Policy:
        """The policy (a shipped folder is written out, loaded, and removed again)."""
        if self.files is None:
            return load_policy(self.spec, **self.kwargs)
        with tempfile.TemporaryDirectory(prefix="agentenv-policy-") as tmp:
            root = Path(tmp) / self.spec
            _write_files(root, self.files)
            return load_policy(str(root), **self.kwargs)


@dataclass(frozen=True)
class WeightUpdate:
    """Trained weights for the workers: a full ``state_dict`` (``kind="state_dict"``) or a peft
    LoRA adapter folder's files (``kind="lora"``)."""

    kind: str
    step: int
    state: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Any, step: int) -> WeightUpdate:
        """The update that gives a worker ``model``'s weights (its adapter when it has one)."""
        if hasattr(model, "peft_config"):
            with tempfile.TemporaryDirectory(prefix="agentenv-adapter-") as tmp:
                model.save_pretrained(tmp)
                files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
            return cls("lora", step, files=files)
        # tied weights (embeddings and LM head) are one tensor under two keys: send it once
        copies: dict[tuple[Any, ...], Any] = {}
        state = {}
        for name, tensor in model.state_dict().items():
            key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
            if key not in copies:
                copies[key] = tensor.detach().to("cpu")
            state[name] = copies[key]
        return cls("state_dict", step, state=state)

    @property
    def size(self) -> int:
        """Bytes sent (each distinct tensor once)."""
        if self.kind == "lora":
            return sum(len(b) for b in self.files.values())
        distinct = {id(t): t for t in self.state.values()}.values()
        return sum(t.numel() * t.element_size() for t in distinct)

    def apply(self, policy: Any) -> None:
        """Load into ``policy`` (an :class:`~agentenv.policies.hf.HFPolicy`) under its lock."""
        if self.kind == "lora":
            with tempfile.TemporaryDirectory(prefix="agentenv-adapter-") as tmp:
                _write_files(Path(tmp), self.files)
                policy.load_lora_adapter(f"step-{self.step}", tmp)
            return
        with policy.weights_lock:
            policy.model.load_state_dict(self.state)


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def _prepare_process(envs: Sequence[EnvInfo], cwd: str | None) -> None:
    """Make an actor's process see what the driver sees: its working directory (relative paths,
    modules next to the user) and the envs it registered (``--import`` modules included)."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
    known = {e.id for e in list_envs()}
    for e in envs:
        if e.id not in known:
            register(
                e.id,
                e.entry_point,
                description=e.description,
                kwargs=e.kwargs,
                expert=e.expert,
                pretraining=e.pretraining,
            )


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------
@ray.remote
class ServiceActor:
    """One env family's FastAPI app served by uvicorn on this node's address, in this actor's
    event loop (it lives and dies with the actor)."""

    def __init__(self, factory: str, config: dict[str, Any], cwd: str | None) -> None:
        _prepare_process((), cwd)
        self.factory = factory
        self.app = build_served_app(factory, config)
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, Any]:
        """Bind a free port on the node's address, serve, and return ``{"url", "node"}``."""
        host = ray.util.get_node_ip_address()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, 0))
        sock.listen(2048)
        url = f"http://{host}:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self.task.done():
                raise EnvServiceError(f"service {self.factory} did not start at {url}", url=url)
            await asyncio.sleep(0.02)
        return {"url": url, "node": ray.get_runtime_context().get_node_id()}

    async def serving(self) -> None:
        """Returns when the server stops (a caller holding this learns of its end)."""
        assert self.task is not None
        await asyncio.shield(self.task)


@dataclass
class Replica:
    """One running service actor of a (factory, config)."""

    slot: int
    url: str
    node: str
    actor: Any
    restarts: int = 0


@ray.remote
class ServiceDirectory:
    """The service actors of a run: started on first use per (factory, config), restarted when
    they die, handed out round-robin by URL."""

    def __init__(self, replicas: int, cpus: float, max_restarts: int, cwd: str | None) -> None:
        self.replicas = replicas
        self.cpus = cpus
        self.max_restarts = max_restarts
        self.cwd = cwd
        self._fleets: dict[tuple[str, str], asyncio.Future[list[Replica]]] = {}
        self._turn: dict[tuple[str, str], itertools.count[int]] = {}
        self._placement = itertools.count()
        self._watchers: set[asyncio.Task[None]] = set()
        self._lost: dict[tuple[str, str], list[str]] = {}

    async def endpoint(self, factory: str, key: str) -> str:
        """The URL of a live replica of ``(factory, config)``, starting them on first use."""
        fleet = await self._fleet(factory, key)
        if not fleet:
            lost = "; ".join(self._lost.get((factory, key), [])) or "none started"
            raise EnvServiceError(f"no replica of service {factory} is alive ({lost})")
        return fleet[next(self._turn[factory, key]) % len(fleet)].url

    async def _fleet(self, factory: str, key: str) -> list[Replica]:
        ident = (factory, key)
        if ident not in self._fleets:
            future: asyncio.Future[list[Replica]] = asyncio.get_running_loop().create_future()
            self._fleets[ident] = future
            self._turn[ident] = itertools.count()
            try:
                nodes = _alive_nodes()
                count = self.replicas or len(nodes)
                fleet = list(
                    await asyncio.gather(
                        *(self._start(factory, key, slot, nodes) for slot in range(count))
                    )
                )
            except BaseException as exc:
                del self._fleets[ident]  # a failed start is tried again by the next caller
                future.set_exception(exc)
                future.exception()  # retrieved: waiters get it, nobody else must
                raise
            future.set_result(fleet)
        return await asyncio.shield(self._fleets[ident])

    async def _start(self, factory: str, key: str, slot: int, nodes: list[str]) -> Replica:
        node = nodes[next(self._placement) % len(nodes)]
        actor = ServiceActor.options(
            num_cpus=self.cpus,
            max_concurrency=ACTOR_CONCURRENCY,
            # hard: an actor creating actors sees stale node loads, and a soft request that
            # asks for no CPU lands on its own node; a service asking for CPUs may go elsewhere
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=self.cpus > 0),
        ).remote(factory, json.loads(key), self.cwd)
        try:
            started = await asyncio.wait_for(actor.start.remote(), START_TIMEOUT)
        except BaseException:
            ray.kill(actor, no_restart=True)
            raise
        replica = Replica(slot, started["url"], started["node"], actor)
        self._watch(factory, key, replica)
        return replica

    def _watch(self, factory: str, key: str, replica: Replica) -> None:
        task = asyncio.create_task(self._supervise(factory, key, replica))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _supervise(self, factory: str, key: str, replica: Replica) -> None:
        """Wait for ``replica`` to end; replace it (bounded) with one on a new port."""
        try:
            await replica.actor.serving.remote()
            why = "its server stopped"
            ray.kill(replica.actor, no_restart=True)
        except RayActorError as exc:
            why = _first_line(exc)
        fleet = self._fleets[factory, key].result()
        fleet.remove(replica)
        self._lost.setdefault((factory, key), []).append(f"{replica.url} died: {why}")
        if replica.restarts >= self.max_restarts:
            return
        try:
            fresh = await self._start(factory, key, replica.slot, _alive_nodes())
        except Exception as exc:
            self._lost[factory, key].append(f"restarting {replica.url} failed: {exc}")
            return
        fresh.restarts = replica.restarts + 1
        fleet.append(fresh)

    async def services(self) -> list[dict[str, Any]]:
        """Every live replica: factory, URL, node, restarts and its actor handle."""
        out = []
        for (factory, _), future in self._fleets.items():
            if future.done() and not future.exception():
                out += [
                    {"factory": factory, "url": r.url, "node": r.node, "restarts": r.restarts,
                     "actor": r.actor}
                    for r in future.result()
                ]  # fmt: skip
        return out

    async def shutdown(self) -> None:
        """Stop supervising and kill every replica."""
        for task in list(self._watchers):
            task.cancel()
        for service in await self.services():
            ray.kill(service["actor"], no_restart=True)
        self._fleets.clear()


@dataclass
class ServiceEndpoint:
    """A service reached by URL (what :func:`agentenv.launch.connect` needs of a server)."""

    url: str


class DirectoryPool(ServicePool):
    """A worker's service pool: ``service="local"`` means a replica of the run's
    :class:`ServiceDirectory`. It owns no server (the directory does), so closing it stops
    nothing."""

    def __init__(self, directory: Any) -> None:
        super().__init__()
        self.directory = directory

    async def server(self, factory: str, config: dict[str, Any] | None = None) -> Any:
        return ServiceEndpoint(await self.directory.endpoint.remote(factory, config_key(config)))


# ---------------------------------------------------------------------------------------------
# Rollout workers
# ---------------------------------------------------------------------------------------------
@ray.remote
class RolloutWorker:
    """A :class:`~agentenv.rollout.RolloutEngine` over the episodes the driver sends, with its
    own policy; envs with a service reach the run's service actors."""

    def __init__(
        self,
        name: str,
        source: PolicySource,
        directory: Any,
        envs: list[EnvInfo],
        cwd: str | None,
    ) -> None:
        _prepare_process(envs, cwd)
        self.name = name
        self.policy = source.load()
        self.pool = DirectoryPool(directory)
        self._engines: dict[str, RolloutEngine] = {}

    async def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": ray.get_runtime_context().get_node_id(),
            "host": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }

    async def play(self, request: EpisodeRequest, config: RolloutConfig) -> Trajectory:
        """Play one episode (an env or service failure ends it as ``error``, never raises)."""
        key = json.dumps(asdict(config), sort_keys=True, default=str)
        if key not in self._engines:
            self._engines[key] = RolloutEngine(self.policy, config)
        async with service_scope(self.pool):
            (trajectory,) = await self._engines[key].run([request])
        return trajectory

    async def load_weights(self, update: WeightUpdate) -> None:
        await asyncio.to_thread(update.apply, self.policy)


@dataclass
class WorkerSlot:
    """The driver's view of one rollout worker: its handle, where it runs, its load, and why it
    died (None while alive)."""

    name: str
    handle: Any
    node: str = ""
    host: str = ""
    pid: int = 0
    in_flight: int = 0
    dead: str | None = None

    def describe(self) -> str:
        return f"rollout worker {self.name} (node {self.node[:12]}, {self.host} pid {self.pid})"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "host": self.host, "pid": self.pid}


def _alive_nodes() -> list[str]:
    """Ids of the cluster's alive nodes, in a fixed order."""
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@cache
def _takes_service(env_id: str) -> bool:
    """Whether the env's constructor has a ``service`` argument (a tool-service family)."""
    try:
        return "service" in inspect.signature(env_class(env_id)).parameters
    except (TypeError, ValueError):
        return False


def failed_trajectory(request: EpisodeRequest, reason: str) -> Trajectory:
    """The ``error`` record of an episode that could not be played (ids as the engine names
    them)."""
    return Trajectory(
        traj_id=request.traj_id or f"{request.env_id}/{request.seed}/{request.sample_seed}",
        group_id=request.group_id or "",
        env_id=request.env_id,
        task_id="",
        seed=request.seed,
        status="error",
        reason=reason,
    )


# ---------------------------------------------------------------------------------------------
# The driver's side
# ---------------------------------------------------------------------------------------------
class RayFanout:
    """A connection to a Ray cluster, the run's service directory and rollout workers.

    Args:
        address: ``"local"`` (start a private cluster on this machine, stopped by
            :meth:`close`), ``"auto"`` (the cluster ``ray start`` runs here), or
            ``HOST:PORT`` / ``ray://HOST:PORT`` of a cluster's head.
        workers: rollout worker actors (0: one per alive node), placed round-robin over the
            nodes.
        cpus_per_worker, gpus_per_worker: what Ray reserves for each worker (a worker with a GPU
            loads an in-worker policy on it).
        service_replicas: service actors per (factory, config) (0: one per alive node).
        cpus_per_service: CPUs Ray reserves per service actor (0: none; they share the node).
        services: ``"actors"`` (services as Ray actors, see the module docs) or ``"in-worker"``
            (each worker's envs keep their own service mode, in-process by default).
        max_retries: times an episode whose worker died is played again on another worker.
        max_service_restarts: times a dead service actor is replaced, per replica.
    """

    def __init__(
        self,
        address: str = LOCAL,
        *,
        workers: int = 0,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        service_replicas: int = 0,
        cpus_per_service: float = 0.0,
        services: str = "actors",
        max_retries: int = 1,
        max_service_restarts: int = 3,
    ) -> None:
        if services not in ("actors", "in-worker"):
            raise ValueError(f"services must be 'actors' or 'in-worker', got {services!r}")
        if min(workers, service_replicas, max_retries, max_service_restarts) < 0:
            raise ValueError("workers, service_replicas and retries must be >= 0")
        self.address = address
        self.n_workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.services_mode = services
        self.max_retries = max_retries
        self.workers: list[WorkerSlot] = []
        self.last_push: dict[str, float] = {}
        self._owns_ray = not ray.is_initialized()
        self._closed = False
        self._cond: asyncio.Condition | None = None
        self._cond_loop: asyncio.AbstractEventLoop | None = None
        if self._owns_ray:
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if address == LOCAL:
                options["include_dashboard"] = False
            ray.init(address=address, **options)
        cwd = os.getcwd()
        self.directory = ServiceDirectory.options(
            num_cpus=0, max_concurrency=ACTOR_CONCURRENCY
        ).remote(service_replicas, cpus_per_service, max_service_restarts, cwd)

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def started(cls, source: PolicySource, address: str = LOCAL, **options: Any) -> RayFanout:
        """Connect (``RayFanout(address, **options)``) and :meth:`start` the workers on
        ``source``; on failure everything is shut down again before the error propagates."""
        fanout = cls(address, **options)
        try:
            return fanout.start(source)
        except BaseException:
            fanout.close()
            raise

    def start(self, source: PolicySource, *, timeout: float = START_TIMEOUT) -> RayFanout:
        """Start the rollout workers with ``source``'s policy; wait until they answer.

        Workers that fail to start are dead from the outset; if none starts, raise
        :class:`RuntimeError` with the first one's reason.
        """
        nodes = _alive_nodes()
        count = self.n_workers or len(nodes)
        shared = ray.put(source)
        envs = list_envs()
        handles = [
            RolloutWorker.options(
                num_cpus=self.cpus_per_worker,
                num_gpus=self.gpus_per_worker,
                max_concurrency=ACTOR_CONCURRENCY,
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    nodes[i % len(nodes)], soft=True
                ),
            ).remote(f"rollout-{i}", shared, self.directory, envs, os.getcwd())
            for i in range(count)
        ]
        self.workers = [WorkerSlot(f"rollout-{i}", h) for i, h in enumerate(handles)]
        refs = {w.handle.info.remote(): w for w in self.workers}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        for ref in ready:
            worker = refs[ref]
            try:
                info = ray.get(ref)
            except RayActorError as exc:
                worker.dead = f"it did not start: {exc}"
                continue
            worker.node, worker.host, worker.pid = info["node"], info["host"], info["pid"]
        for ref in pending:
            refs[ref].dead = (
                f"it did not start within {timeout:g}s (each worker asks for "
                f"{self.cpus_per_worker:g} CPU and {self.gpus_per_worker:g} GPU; the cluster "
                f"has {ray.cluster_resources()})"
            )
            ray.kill(refs[ref].handle, no_restart=True)
        if all(w.dead for w in self.workers):
            raise RuntimeError(f"no rollout worker started: {self.workers[0].dead}")
        return self

    def close(self) -> None:
        """Kill every actor of the run and disconnect (stopping a ``local`` cluster). Idempotent;
        never raises."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            ray.get(self.directory.shutdown.remote(), timeout=30)
        for actor in [*(w.handle for w in self.workers), self.directory]:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if self._owns_ray:
            with contextlib.suppress(Exception):
                ray.shutdown()

    def __enter__(self) -> RayFanout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- engines -------------------------------------------------------------------------------
    def engine(self, policy: Policy, config: RolloutConfig | None = None) -> RayRolloutEngine:
        """An engine over this fan-out's workers (``policy``: the driver's copy, for its name and
        tokenizer; the workers play with the policy they were started with)."""
        return RayRolloutEngine(self, policy, config)

    async def services(self) -> list[dict[str, Any]]:
        """The live service actors: factory, URL, node, restarts, actor handle."""
        return await self.directory.services.remote()

    # -- dispatch ------------------------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._cond_loop is not loop:
            self._cond, self._cond_loop = asyncio.Condition(), loop
        return self._cond

    async def _acquire(self, cap: int) -> WorkerSlot | None:
        """The live worker with the fewest episodes in flight once one has room; None when no
        worker is alive."""
        cond = self._condition()
        async with cond:
            while True:
                alive = [w for w in self.workers if w.dead is None]
                if not alive:
                    return None
                free = [w for w in alive if w.in_flight < cap]
                if free:
                    worker = min(free, key=lambda w: w.in_flight)
                    worker.in_flight += 1
                    return worker
                await cond.wait()

    async def _release(self, worker: WorkerSlot, dead: str | None = None) -> None:
        cond = self._condition()
        async with cond:
            worker.in_flight -= 1
            if dead is not None and worker.dead is None:
                worker.dead = dead
            cond.notify_all()

    def _wire(self, request: EpisodeRequest) -> EpisodeRequest:
        """``request`` as a worker plays it: a service family's env is pointed at the service
        actors unless it was given URLs."""
        if self.services_mode != "actors" or not _takes_service(request.env_id):
            return request
        defaults = env_info(request.env_id).kwargs
        service = request.env_kwargs.get("service", defaults.get("service"))
        if service not in _IN_PROCESS_MODES:
            return request
        return replace(request, env_kwargs={**request.env_kwargs, "service": "local"})

    async def play(self, request: EpisodeRequest, config: RolloutConfig) -> Trajectory:
        """Play ``request`` on a live worker, again on another if that one dies (at most
        :attr:`max_retries` times); an ``error`` trajectory naming the dead worker after that."""
        wire = self._wire(request)
        died: list[WorkerSlot] = []
        while len(died) <= self.max_retries:
            worker = await self._acquire(config.max_concurrent_episodes)
            if worker is None:
                break
            dead = None
            try:
                trajectory = await worker.handle.play.remote(wire, config)
            except RayActorError as exc:
                dead = _first_line(exc)
                died.append(worker)
                continue
            except Exception as exc:  # the worker raised: a bug or a bad request, not a death
                return failed_trajectory(request, f"{worker.describe()} failed: {exc}")
            finally:
                await self._release(worker, dead)
            trajectory.metadata[WORKER] = worker.record()
            if died:
                trajectory.metadata[RETRIED] = [w.name for w in died]
            return trajectory
        return failed_trajectory(request, self._lost_reason(died))

    def _lost_reason(self, died: list[WorkerSlot]) -> str:
        if died:
            last = died[-1]
            tried = f" (played on {len(died)} workers, each died)" if len(died) > 1 else ""
            return f"{last.describe()} died while playing this episode: {last.dead}{tried}"
        dead = "; ".join(f"{w.describe()}: {w.dead}" for w in self.workers)
        return f"no rollout worker is alive ({dead})"

    # -- weights -------------------------------------------------------------------------------
    async def push(self, model: Any, step: int) -> dict[str, float]:
        """Give every live worker ``model``'s weights (one object-store copy); returns and keeps
        in :attr:`last_push` the bytes sent and the seconds it took."""
        t0 = time.perf_counter()
        update = WeightUpdate.of(model, step)
        ref = ray.put(update)
        alive = [w for w in self.workers if w.dead is None]
        results = await asyncio.gather(
            *(w.handle.load_weights.remote(ref) for w in alive), return_exceptions=True
        )
        for worker, result in zip(alive, results, strict=True):
            if isinstance(result, RayActorError):
                worker.dead = _first_line(result)
            elif isinstance(result, BaseException):
                raise RuntimeError(f"{worker.describe()} could not load the weights: {result}")
        self.last_push = {"bytes": float(update.size), "seconds": time.perf_counter() - t0}
        return self.last_push


class RayRolloutEngine(RolloutEngine):
    """:class:`~agentenv.rollout.RolloutEngine`'s interface over a :class:`RayFanout`: each
    request is played on a rollout worker; trajectories come back in request order, each with
    ``metadata["worker"]``. ``generated_tokens`` and ``generate_calls`` count the returned
    episodes' action tokens and turns."""

    def __init__(
        self, fanout: RayFanout, policy: Policy, config: RolloutConfig | None = None
    ) -> None:
        super().__init__(policy, config)
        self.fanout = fanout

    async def run(
        self,
        requests: Sequence[EpisodeRequest],
        *,
        on_episode: Callable[[Trajectory], None] | None = None,
    ) -> list[Trajectory]:
        """Play every request on the workers (no episode semaphore here: the workers bound their
        own concurrency); trajectories come back in request order."""
        return await play_all(requests, self.run_episode, on_episode)

    async def run_episode(self, request: EpisodeRequest) -> Trajectory:
        trajectory = await self.fanout.play(request, self.config)
        self.generated_tokens += int(sum(trajectory.loss_mask))
        self.generate_calls += trajectory.num_turns
        return trajectory
