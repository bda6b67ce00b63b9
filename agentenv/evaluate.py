"""Evaluation: any policy on an env or a suite of envs, with metrics people can read.

An evaluation plays ``n`` tasks per env, ``k`` samples each (one group per task), and writes

- ``results.jsonl``: one row per episode (env, task, sample, reward, components, turns, tokens,
  time, status, per-turn rewards) with its transcript (:mod:`agentenv.transcript`, capped;
  ``transcripts=None`` leaves it out);
- ``metadata.json``: the configuration, package versions and per-env aggregates;
- ``summary.png``: success rate and pass@k per env;

and prints a table per env: success rate, mean reward ± std, pass@k (unbiased estimator), mean
turns and generated tokens, generation vs env time; then the unsuccessful episodes grouped by
:func:`failure_reason`, with a short example transcript of each reason. ``resume=True`` re-runs
only the episodes that are missing from ``results.jsonl`` or ended in ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from agentenv import DISTRIBUTION
from agentenv.jsonl import iter_jsonl
from agentenv.launch import service_scope
from agentenv.planner import TaskSource, eval_episodes, probe_all
from agentenv.policies.base import Policy
from agentenv.registry import env_info
from agentenv.rollout import EpisodeRequest, RolloutConfig, RolloutEngine
from agentenv.runfiles import METADATA, RESULTS
from agentenv.trajectory import Trajectory, jsonable
from agentenv.transcript import (
    DEFAULT_LIMITS,
    TranscriptLimits,
    build_transcript,
    short_transcript,
)

EngineFactory = Callable[[Policy, RolloutConfig | None], RolloutEngine]
"""What builds the engine of a run from its policy and rollout config: :class:`RolloutEngine`
itself, or a fan-out's (:meth:`agentenv.scale.ray.RayFanout.engine`)."""

TEST_SEED_OFFSET = 1_000_000
"""Evaluation seeds start here so they never coincide with small training seeds."""


# ---------------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------------
@dataclass
class SuiteEntry:
    """One env of a suite: id, constructor kwargs, split and number of tasks.

    ``split=None`` plays the env's ``test`` split (or its only source when it declares no
    splits); ``n=None`` plays every task of a finite split, or
    :data:`~agentenv.planner.DEFAULT_EVAL_TASKS` of an unlimited one.
    """

    env: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    n: int | None = None


@dataclass
class Suite:
    name: str
    entries: list[SuiteEntry]


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite from a YAML file, or a built-in one by name (``core``).

    YAML: ``{"name": str, "envs": [{"env": id, "kwargs": {...}, "split": "test", "n": 50}]}``
    (``split`` and ``n`` optional, see :class:`SuiteEntry`).
    """
    path = Path(name_or_path)
    if not path.exists():
        builtin = resources.files("agentenv") / "suites" / f"{name_or_path}.yaml"
        if not builtin.is_file():
            raise FileNotFoundError(
                f"no suite file {str(name_or_path)!r} and no built-in suite by that name"
            )
        text, source = builtin.read_text(), f"built-in suite {name_or_path}"
    else:
        text, source = path.read_text(), str(path)
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not isinstance(data.get("envs"), list):
        raise ValueError(f"{source}: a suite needs a list under 'envs'")
    entries = []
    for i, row in enumerate(data["envs"]):
        if not isinstance(row, dict) or "env" not in row:
            raise ValueError(f"{source}: envs[{i}] needs an 'env' id")
        unknown = set(row) - {"env", "kwargs", "split", "n"}
        if unknown:
            raise ValueError(f"{source}: envs[{i}] has unknown field(s) {sorted(unknown)}")
        env_info(row["env"])  # fails with close matches for a typo
        entries.append(SuiteEntry(**row))
    return Suite(str(data.get("name", path.stem)), entries)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021, arXiv 2107.03374): 1 − C(n−c, k) / C(n, k).

    ``n`` samples of which ``c`` succeeded; requires ``k ≤ n``.
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


Episode = Trajectory | Mapping[str, Any]
"""An episode as a :class:`~agentenv.trajectory.Trajectory` or as its ``results.jsonl`` row."""


@dataclass
class SuccessCount:
    """Success over a set of episodes. An episode that ended in ``error`` (its service or env
    failed, not its policy) is counted in ``errors`` and left out of the rate:
    ``rate = successes / (episodes − errors)``, 0 when no episode is left."""

    episodes: int = 0
    errors: int = 0
    successes: int = 0

    @property
    def scored(self) -> int:
        """The episodes the rate is over: those that did not end in ``error``."""
        return self.episodes - self.errors

    @property
    def rate(self) -> float:
        return self.successes / self.scored if self.scored else 0.0

    @property
    def error_rate(self) -> float:
        """The share of episodes that ended in ``error`` (0 for none)."""
        return self.errors / self.episodes if self.episodes else 0.0

    def add(self, episode: Episode) -> None:
        if isinstance(episode, Mapping):
            status, success = episode["status"], episode["success"]
        else:
            status, success = episode.status, episode.success
        self.episodes += 1
        if status == "error":
            self.errors += 1
        else:
            self.successes += bool(success)


def success_count(episodes: Iterable[Episode]) -> SuccessCount:
    """The :class:`SuccessCount` of ``episodes``: what evaluation reports and training logs."""
    count = SuccessCount()
    for episode in episodes:
        count.add(episode)
    return count


@dataclass
class EnvSummary:
    env: str
    episodes: int
    errors: int
    success_rate: float
    reward_mean: float
    reward_std: float
    pass_at_k: dict[int, float]
    turns_mean: float
    tokens_mean: float
    gen_seconds: float
    env_seconds: float


def result_row(
    traj: Trajectory, sample: int, seconds: float, transcript: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``results.jsonl`` row of one episode; ``transcript`` (when given) is its last key, so
    a reader that wants the other fields can stop parsing there (``agentenv.view`` does)."""
    components: dict[str, float] = {}
    tools: dict[str, list[int]] = {}
    for turn in traj.turns:
        for name, value in turn.reward_components.items():
            components[name] = components.get(name, 0.0) + float(value)
        for call in turn.tool_calls:
            counts = tools.setdefault(str(call.get("name")), [0, 0])
            counts[0] += 1
            counts[1] += not call.get("ok", True)
    row = {
        "env": traj.env_id,
        "seed": traj.seed,
        "sample": sample,
        "task_id": traj.task_id,
        "group_id": traj.group_id,
        "reward": traj.reward,
        "success": traj.success,
        "components": components,
        "tool_calls": tools,
        "turns": traj.num_turns,
        "invalid_actions": sum(not t.action_valid for t in traj.turns),
        "tokens": int(sum(traj.loss_mask)),
        "seconds": seconds,
        "gen_seconds": traj.gen_seconds,
        "env_seconds": traj.env_seconds,
        "status": traj.status,
        "reason": traj.reason,
        "per_turn": [
            {
                "reward": t.reward,
                "components": t.reward_components,
                "valid": t.action_valid,
                "anchor": jsonable(t.anchor),
                "entropy": t.entropy,
            }
            for t in traj.turns
        ],
    }
    if "worker" in traj.metadata:  # where a fan-out engine played it (agentenv.scale.ray)
        row["worker"] = traj.metadata["worker"]
    if transcript is not None:
        row["transcript"] = transcript
    return row


def summarize(rows: Sequence[dict[str, Any]], k: int) -> list[EnvSummary]:
    """Per-env aggregates; errored episodes are counted but excluded from the metrics."""
    summaries = []
    for env_id in dict.fromkeys(r["env"] for r in rows):
        env_rows = [r for r in rows if r["env"] == env_id]
        count = success_count(env_rows)
        ok = [r for r in env_rows if r["status"] != "error"]
        rewards = np.array([r["reward"] for r in ok], dtype=float)
        by_task: dict[Any, list[bool]] = {}
        for r in ok:
            by_task.setdefault(r["seed"], []).append(bool(r["success"]))
        pass_k = {}
        for kk in sorted({1, k}):
            tasks = [s for s in by_task.values() if len(s) >= kk]
            pass_k[kk] = (
                float(np.mean([pass_at_k(len(s), sum(s), kk) for s in tasks])) if tasks else 0.0
            )
        summaries.append(
            EnvSummary(
                env=env_id,
                episodes=count.episodes,
                errors=count.errors,
                success_rate=count.rate,
                reward_mean=float(rewards.mean()) if ok else 0.0,
                reward_std=float(rewards.std()) if ok else 0.0,
                pass_at_k=pass_k,
                turns_mean=float(np.mean([r["turns"] for r in ok])) if ok else 0.0,
                tokens_mean=float(np.mean([r["tokens"] for r in ok])) if ok else 0.0,
                gen_seconds=float(sum(r["gen_seconds"] for r in ok)),
                env_seconds=float(sum(r["env_seconds"] for r in ok)),
            )
        )
    return summaries


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def error_reasons(rows: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    """``(count, reason)`` of the errored episodes, one per distinct reason, most frequent first."""
    counts = Counter(r["reason"] or "(no reason recorded)" for r in rows if r["status"] == "error")
    return [(n, reason) for reason, n in counts.most_common()]


def failure_reason(row: dict[str, Any]) -> str | None:
    """Why an episode did not succeed (None when it did): ``error: <message>``,
    ``truncated: <budget>`` or ``finished without success``, followed by ``(every action
    invalid)`` or ``(some actions invalid)`` when the env rejected actions."""
    if row["success"]:
        return None
    if row["status"] == "error":
        return f"error: {row['reason'] or '(no reason recorded)'}"
    base = (
        f"truncated: {row['reason']}"
        if row["status"] == "truncated"
        else "finished without success"
    )
    invalid, turns = row.get("invalid_actions", 0), row["turns"]
    if invalid and invalid == turns:
        return f"{base} (every action invalid)"
    return f"{base} (some actions invalid)" if invalid else base


@dataclass(frozen=True)
class Failure:
    """One :func:`failure_reason`: how many episodes had it, and the first of them."""

    reason: str
    count: int
    example: dict[str, Any]


def failures(rows: Sequence[dict[str, Any]]) -> list[Failure]:
    """The distinct failure reasons of ``rows``, most frequent first, each with an example."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        reason = failure_reason(row)
        if reason is not None:
            found.setdefault(reason, []).append(row)
    ranked = sorted(found.items(), key=lambda item: -len(item[1]))
    return [Failure(reason, len(group), group[0]) for reason, group in ranked]


@dataclass
class EvalResult:
    summaries: list[EnvSummary]
    rows: list[dict[str, Any]]
    out_dir: Path | None
    wall_seconds: float

    @property
    def error_rate(self) -> float:
        """Share of episodes that ended in ``error`` (service or env failures, not wrong answers)."""
        return success_count(self.rows).error_rate


def _episode_key(row: dict[str, Any]) -> tuple[str, int, int]:
    return (row["env"], int(row["seed"]), int(row["sample"]))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``results.jsonl``; a torn last line (an interrupted write) is dropped, so its
    episode runs again, while a bad line before it raises ``DataFormatError`` naming it."""
    return [row for _, row in iter_jsonl(path, torn_tail=True)] if path.exists() else []


async def probe_suite(suite: Suite) -> list[TaskSource]:
    """Every entry's task source, each env built and reset once; all failures in one
    :class:`~agentenv.planner.PlanError`."""
    return await probe_all([(e.env, e.kwargs, e.split) for e in suite.entries], role="eval")


def plan_requests(
    suite: Suite,
    sources: Sequence[TaskSource],
    k: int,
    seed_offset: int = TEST_SEED_OFFSET,
) -> list[tuple[EpisodeRequest, int]]:
    """(request, sample index) for every episode of the suite: ``n`` tasks × ``k`` samples."""
    plan = []
    for entry, source in zip(suite.entries, sources, strict=True):
        plan += eval_episodes(source, entry.n, k, seed_offset)
    return plan


async def evaluate(
    policy: Policy,
    suite: Suite,
    *,
    k: int = 1,
    out_dir: str | Path | None = None,
    resume: bool = False,
    rollout: RolloutConfig | None = None,
    progress: bool = True,
    config: dict[str, Any] | None = None,
    seed_offset: int = TEST_SEED_OFFSET,
    transcripts: TranscriptLimits | None = DEFAULT_LIMITS,
    make_engine: EngineFactory = RolloutEngine,
) -> EvalResult:
    """Evaluate ``policy`` on ``suite``: ``n`` tasks per env × ``k`` samples each.

    Every env is probed first (:func:`probe_suite`), so a suite that cannot run fails before
    anything is written. Services launched locally (``service="local"``) are shared by all the
    episodes and stopped at the end (:func:`agentenv.launch.service_scope`). Each row carries
    the episode's transcript capped by ``transcripts`` (None: no transcripts).
    ``make_engine(policy, rollout)`` builds the engine that plays the episodes (e.g.
    :meth:`agentenv.scale.ray.RayFanout.engine`, whose rows also say where each was played).
    """
    start = time.perf_counter()
    async with service_scope():
        sources = await probe_suite(suite)
        plan = plan_requests(suite, sources, k, seed_offset)
        out = Path(out_dir) if out_dir is not None else None
        results_path = out / RESULTS if out else None
        kept = _open_results(results_path, resume)
        done = {_episode_key(r) for r in kept}
        todo = [(req, s) for req, s in plan if (req.env_id, req.seed, s) not in done]
        engine = make_engine(policy, rollout)
        rows = kept + await _play(engine, todo, results_path, progress, transcripts)
    rows.sort(key=_episode_key)
    summaries = summarize(rows, k)
    result = EvalResult(summaries, rows, out, time.perf_counter() - start)
    if out is not None:
        _write_metadata(out, suite, k, policy, config, result, transcripts)
        plot_summary(summaries, k, out / "summary.png")
    return result


def _open_results(path: Path | None, resume: bool) -> list[dict[str, Any]]:
    """The finished rows kept from ``path`` (on resume; errored ones are re-run), rewritten so
    new rows append after them."""
    if path is None:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = [r for r in _read_rows(path) if r["status"] != "error"] if resume else []
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


async def _play(
    engine: RolloutEngine,
    todo: list[tuple[EpisodeRequest, int]],
    results_path: Path | None,
    progress: bool,
    transcripts: TranscriptLimits | None,
) -> list[dict[str, Any]]:
    """Play ``todo``, appending each finished episode's row to ``results_path`` at once."""
    rows: list[dict[str, Any]] = []
    sample_of = {id(req): s for req, s in todo}
    started = time.perf_counter()
    bar = _Progress(len(todo), enabled=progress)
    tokenizer = getattr(engine.policy, "tokenizer", None)

    def record(traj: Trajectory, request: EpisodeRequest) -> None:
        seconds = time.perf_counter() - started
        transcript = None
        if transcripts is not None:
            transcript = build_transcript(traj, tokenizer, transcripts)
        row = result_row(traj, sample_of[id(request)], seconds, transcript)
        rows.append(row)
        if results_path is not None:
            with results_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        bar.advance(row)

    with bar:
        await asyncio.gather(*(_run_one(engine, req, record) for req, _ in todo))
    return rows


async def _run_one(engine: RolloutEngine, request: EpisodeRequest, record: Any) -> None:
    (traj,) = await engine.run([request])
    record(traj, request)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (DISTRIBUTION, "torch", "transformers", "gymnasium", "tantivy"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _write_metadata(
    out: Path,
    suite: Suite,
    k: int,
    policy: Policy,
    config: dict | None,
    result: EvalResult,
    transcripts: TranscriptLimits | None,
) -> None:
    meta = {
        "suite": {"name": suite.name, "envs": [asdict(e) for e in suite.entries]},
        "k": k,
        "policy": getattr(policy, "name", type(policy).__name__),
        "config": config or {},
        "transcripts": asdict(transcripts) if transcripts is not None else None,
        "versions": _versions(),
        "wall_seconds": result.wall_seconds,
        "aggregates": [asdict(s) for s in result.summaries],
    }
    (out / METADATA).write_text(json.dumps(meta, indent=2, default=str))


# ---------------------------------------------------------------------------------------------
# Presentation
# ---------------------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar with the live success rate (silent when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.count = SuccessCount()
        self._progress = None

    def __enter__(self) -> _Progress:
        if self.enabled and self.total:
            self._progress = Progress(
                TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(),
                TextColumn("success {task.fields[rate]}"), TimeElapsedColumn(),
            )  # fmt: skip
            self._task = self._progress.add_task("eval", total=self.total, rate="–")
            self._progress.start()
        return self

    def advance(self, row: dict[str, Any]) -> None:
        self.count.add(row)
        if self._progress is not None:
            rate = f"{self.count.rate:.1%}"
            self._progress.update(self._task, advance=1, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def summary_table(summaries: Sequence[EnvSummary], k: int, title: str = "evaluation") -> Any:
    """A rich Table of per-env summaries."""
    table = Table(title=title)
    for col in ("env", "episodes", "errors", "success", "reward (mean ± std)"):
        table.add_column(col, justify="right" if col != "env" else "left")
    ks = sorted({1, k})
    for kk in ks:
        table.add_column(f"pass@{kk}", justify="right")
    for col in ("turns", "tokens", "gen s", "env s"):
        table.add_column(col, justify="right")
    for s in summaries:
        table.add_row(
            s.env, str(s.episodes), str(s.errors), f"{s.success_rate:.1%}",
            f"{s.reward_mean:.3f} ± {s.reward_std:.3f}",
            *(f"{s.pass_at_k.get(kk, 0.0):.1%}" for kk in ks),
            f"{s.turns_mean:.2f}", f"{s.tokens_mean:.1f}", f"{s.gen_seconds:.1f}",
            f"{s.env_seconds:.1f}",
        )  # fmt: skip
    return table


@dataclass(frozen=True)
class ToolUsage:
    """How one env's episodes used one tool: calls, failed calls, episodes that called it."""

    env: str
    tool: str
    calls: int
    failed: int
    episodes: int


def tool_usage(rows: Sequence[dict[str, Any]]) -> list[ToolUsage]:
    """Per (env, tool) call counts over the episodes of ``rows`` (envs with native tools)."""
    calls: Counter[tuple[str, str]] = Counter()
    failed: Counter[tuple[str, str]] = Counter()
    episodes: Counter[tuple[str, str]] = Counter()
    for row in rows:
        for tool, (n, bad) in row.get("tool_calls", {}).items():
            key = (row["env"], tool)
            calls[key] += n
            failed[key] += bad
            episodes[key] += 1
    return [ToolUsage(env, tool, calls[env, tool], failed[env, tool], episodes[env, tool])
            for env, tool in sorted(calls)]  # fmt: skip


def tool_table(usage: Sequence[ToolUsage]) -> Any:
    """A rich Table of tool calls per env and tool."""
    table = Table(title="tool calls")
    for col in ("env", "tool", "calls", "failed", "episodes"):
        table.add_column(col, justify="left" if col in ("env", "tool") else "right")
    for u in usage:
        failed = f"{u.failed} ({u.failed / u.calls:.0%})"
        table.add_row(u.env, u.tool, str(u.calls), failed, str(u.episodes))
    return table


def failure_report(found: Sequence[Failure], *, max_reasons: int = 8) -> list[Any]:
    """Rich renderables: a table of the failure reasons (count, reason, example episode), then
    one short example transcript per reason (the first ``max_reasons`` reasons); nothing when
    every episode succeeded."""
    if not found:
        return []
    table = Table(title="unsuccessful episodes by reason")
    table.add_column("episodes", justify="right")
    table.add_column("reason", overflow="fold")
    table.add_column("example (env, task, sample)")
    for f in found:
        ex = f.example
        table.add_row(str(f.count), f.reason, f"{ex['env']} {ex['task_id']} #{ex['sample']}")
    out: list[Any] = [table]
    for f in found[:max_reasons]:
        ex = f.example
        body = (
            short_transcript(ex["transcript"])
            if "transcript" in ex
            else "(no transcript: the run was made with --no-transcripts)"
        )
        title = f"{f.reason} — {ex['env']} {ex['task_id']} #{ex['sample']}"
        out.append(Panel(Text(body), title=title, title_align="left"))
    if len(found) > max_reasons:
        out.append(f"… and {len(found) - max_reasons} more reasons (see agentenv view)")
    return out


def plot_summary(summaries: Sequence[EnvSummary], k: int, path: Path) -> None:
    """Bar chart of success rate and pass@k per env (a bare Figure: no pyplot, so the calling
    process's matplotlib backend is left as it is)."""
    # Imported here: it costs 0.3-0.5 s of CPU, about what all of `agentenv --help` imports, which
    # every importer of this module (the viewer, training) would pay for a plot it never draws.
    from matplotlib.figure import Figure

    envs = [s.env for s in summaries]
    x = np.arange(len(envs))
    ks = sorted({1, k})
    width = 0.8 / len(ks)
    fig = Figure(figsize=(max(4, 1.6 * len(envs) + 2), 3.5))
    ax = fig.subplots()
    for i, kk in enumerate(ks):
        vals = [s.pass_at_k.get(kk, 0.0) for s in summaries]
        bars = ax.bar(x + (i - (len(ks) - 1) / 2) * width, vals, width, label=f"pass@{kk}")
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in vals], fontsize=8)
    ax.set_xticks(x, envs)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("success per env")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
