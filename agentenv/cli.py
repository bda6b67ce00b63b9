"""The ``agentenv`` command.

Subcommands: ``list``, ``info``, ``check``, ``play``, ``serve``, ``eval``, ``serve-policy``,
``models prepare``, ``sft``, ``train``, ``report``, ``view`` and ``quickstart`` (the README's main
job).
The subcommands that need torch (the ``train`` extra) import it when they run
(:data:`TORCH_PARTS`); everything else is imported with this module.

Global options: ``--import MODULE`` (repeatable) imports a module that registers envs, and
``--debug`` shows the traceback of any error. Without it an error is one message on stderr:
configuration and usage errors exit with :data:`EXIT_USAGE`, anything unexpected with
:data:`EXIT_FAILURE` (as does a failed ``agentenv check``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from agentenv.check import BAD_ACTIONS, MAX_STEPS, check_env
from agentenv.env import EnvContractError
from agentenv.evaluate import (
    Suite,
    SuiteEntry,
    evaluate,
    failure_report,
    failures,
    load_suite,
    summary_table,
    tool_table,
    tool_usage,
)
from agentenv.launch import serve
from agentenv.models import load_tokenizer, prepare
from agentenv.policies.specs import load_policy
from agentenv.registry import env_class, env_info, import_env_module, list_envs, make
from agentenv.rollout import EpisodesFailedError, RolloutConfig
from agentenv.scale import require_ray
from agentenv.service import EnvServiceError, list_services, service_spec
from agentenv.toolcalls import PARSERS
from agentenv.transcript import DEFAULT_LIMITS
from agentenv.view.app import create_app
from agentenv.view.export import export_html
from agentenv.view.runs import open_run

console = Console(width=None if sys.stdout.isatty() else 160)

TORCH_PARTS: dict[str, str] = {
    "serve_policy": "agentenv.policies.server",
    "train": "agentenv.train",
    "sft": "agentenv.train",
    "write_report": "agentenv.train",
    "quickstart": "agentenv.train",
    "read_summary": "agentenv.train.summary",
    "summary_line": "agentenv.train.summary",
}
"""The module of each function that the subcommands needing torch (``serve-policy``, ``train``,
``sft``, ``report``, ``quickstart``) call, imported by :func:`torch_part` when one runs: torch
and transformers are the ``train`` extra, and importing them costs ~7 s of CPU, nine times all
that ``agentenv --help`` imports (0.8 s)."""


def torch_part(name: str) -> Any:
    """The function ``name`` of :data:`TORCH_PARTS`, its module imported now."""
    return getattr(importlib.import_module(TORCH_PARTS[name]), name)


EXIT_FAILURE = 1
"""Exit status of an unexpected error, and of an ``agentenv check`` that found failures."""
EXIT_USAGE = 2
"""Exit status of a configuration or usage error (as argparse uses for bad arguments)."""
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValidationError,
    ValueError,
    KeyError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    EnvServiceError,
    EnvContractError,
    yaml.YAMLError,
)
"""Errors that a configuration, an argument or the user's env caused: reported without a
traceback, exit :data:`EXIT_USAGE` (agentenv's own errors — ConfigError, DataFormatError,
PolicySpecError, UnknownEnvError, PlanError — derive from ValueError or KeyError)."""


def _parse_assignments(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise SystemExit(f"{flag} {item!r}: the value is not valid YAML ({problem})") from exc
    return out


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> None:
    table = Table(title="environments")
    table.add_column("id")
    table.add_column("description")
    for info in list_envs():
        table.add_row(info.id, info.description)
    console.print(table)
    services = Table(title="services (agentenv serve NAME)")
    services.add_column("name")
    services.add_column("description")
    for spec in list_services():
        services.add_row(spec.name, spec.description)
    console.print(services)


def cmd_info(args: argparse.Namespace) -> None:
    info = env_info(args.env)
    cls = env_class(args.env)
    console.print(f"[bold]{info.id}[/bold] — {info.description}\n")
    console.print(inspect.getdoc(cls) or "(no description)")
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    if params:
        table = Table(title="knobs (agentenv.make kwargs / --env-arg KEY=VALUE)")
        table.add_column("name")
        table.add_column("default")
        for p in params:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            default = info.kwargs.get(p.name, p.default)
            table.add_row(p.name, "required" if default is p.empty else repr(default))
        console.print(table)
    if cls.stop_strings:
        console.print(f"stop strings: {', '.join(map(repr, cls.stop_strings))}")
    env = make(args.env)
    try:
        _, reset_info = env.reset(seed=0)
        console.print("\n[bold]system prompt[/bold]")
        console.print(reset_info.get("system_prompt", ""), markup=False)
    finally:
        env.close()


def cmd_check(args: argparse.Namespace) -> None:
    """Run :func:`agentenv.check.check_env` and print its table; exit 1 if a check failed."""
    report = check_env(
        args.env,
        env_kwargs=_parse_assignments(args.env_arg, "--env-arg"),
        seed=args.seed,
        bad_actions=args.bad_actions,
        max_steps=args.max_steps,
    )
    console.print(report.table())
    console.print(report.summary())
    if not report.passed:
        sys.exit(EXIT_FAILURE)


PLAY_TOOLS_HINT = (
    'Call tools with one block per call: <tool_call>{"name": "NAME", "arguments": {...}}'
    "</tool_call>\nA message without a call is your final answer."
)


def _tools_table(tools: list[dict[str, Any]]) -> Table:
    """The env's tools: name, parameters (``*`` marks required ones), description."""
    table = Table("tool", "parameters", "description", title="tools")
    for tool in tools:
        fn = tool.get("function", tool)
        params = fn.get("parameters") or {}
        required = set(params.get("required") or ())
        args = ", ".join(
            f"{name}{'*' if name in required else ''}: {spec.get('type', 'any')}"
            for name, spec in (params.get("properties") or {}).items()
        )
        table.add_row(fn.get("name", "?"), args, fn.get("description", ""))
    return table


def cmd_play(args: argparse.Namespace) -> None:
    """A person plays: sees observations, types actions (end with an empty line), sees rewards."""
    env = make(args.env, **_parse_assignments(args.env_arg, "--env-arg"))
    try:
        observation, info = env.reset(seed=args.seed)
        console.rule(f"{args.env} · task {info.get('task_id')}")
        if info.get("system_prompt"):
            console.print("[dim]" + info["system_prompt"] + "[/dim]", markup=True, highlight=False)
        if env.tools:
            console.print(_tools_table(env.tools))
            console.print(PLAY_TOOLS_HINT, highlight=False, markup=False)
        total = 0.0
        while True:
            console.print(f"\n[bold cyan]observation[/bold cyan]\n{observation}", highlight=False)
            console.print("[bold green]your action[/bold green] (finish with an empty line):")
            lines = []
            while True:
                try:
                    line = input()
                except EOFError:
                    line = None
                if not line:
                    break
                lines.append(line)
            if line is None and not lines:
                console.print("[yellow]input closed; episode abandoned[/yellow]")
                return
            observation, reward, terminated, truncated, info = env.step("\n".join(lines))
            total += reward
            parts = ", ".join(f"{k}={v:g}" for k, v in info.get("reward_components", {}).items())
            valid = "" if info.get("action_valid", True) else " [red](invalid action)[/red]"
            console.print(f"reward {reward:g} ({parts}){valid}")
            if terminated or truncated:
                console.print(f"\n{observation}", highlight=False)
                end = "success" if info.get("success") else ("truncated" if truncated else "done")
                console.rule(f"episode over: {end}, return {total:g}")
                return
    finally:
        env.close()


def cmd_serve(args: argparse.Namespace) -> None:
    spec = service_spec(args.name)
    config = _parse_assignments(args.option, "--option")
    if args.corpus:
        config["corpus"] = args.corpus
    console.print(f"serving {spec.name} at http://{args.host}:{args.port} (Ctrl-C stops)")
    serve(spec.factory, config, host=args.host, port=args.port, log_level=args.log_level)


# ---------------------------------------------------------------------------------------------
# Policies and evaluation
# ---------------------------------------------------------------------------------------------
def _rollout_config(args: argparse.Namespace) -> RolloutConfig:
    return RolloutConfig(
        max_turns=args.max_turns,
        max_tokens_per_turn=args.max_tokens_per_turn,
        max_context_tokens=args.max_context_tokens,
        temperature=args.temperature,
        tool_parser=args.tool_parser,
    )


def cmd_eval(args: argparse.Namespace) -> None:
    if bool(args.env) == bool(args.suite):
        raise SystemExit("agentenv eval: give exactly one of --env ENV or --suite SUITE")
    if args.suite:
        suite = load_suite(args.suite)
        if args.n is not None:
            for entry in suite.entries:
                entry.n = args.n
    else:
        env_kwargs = _parse_assignments(args.env_arg, "--env-arg")
        suite = Suite(args.env, [SuiteEntry(args.env, env_kwargs, args.split, args.n)])
    policy_kwargs = {"tokenizer": load_tokenizer(args.tokenizer)} if args.tokenizer else {}
    policy = load_policy(args.policy, **policy_kwargs)
    fanout = None
    if args.ray is not None:
        scale_ray = _ray_module()
        source = scale_ray.PolicySource(args.policy, policy_kwargs)
        fanout = scale_ray.RayFanout.started(source, args.ray, workers=args.ray_workers)
    engine = {} if fanout is None else {"make_engine": fanout.engine}

    async def run() -> Any:
        try:
            return await evaluate(
                policy, suite, k=args.k, out_dir=args.out, resume=args.resume,
                rollout=_rollout_config(args), config=vars(args),
                transcripts=None if args.no_transcripts else DEFAULT_LIMITS, **engine,
            )  # fmt: skip
        finally:
            await policy.aclose()

    try:
        result = asyncio.run(run())
    finally:
        if fanout is not None:
            fanout.close()
    console.print(summary_table(result.summaries, args.k, title=f"{args.policy} on {suite.name}"))
    usage = tool_usage(result.rows)
    if usage:
        console.print(tool_table(usage))
    if args.out:
        console.print(f"results: {Path(args.out) / 'results.jsonl'}")
    for renderable in failure_report(failures(result.rows)):
        console.print(renderable)
    if result.error_rate > args.max_error_rate:
        print(
            f"agentenv eval: {result.error_rate:.1%} of the episodes errored "
            f"(more than --max-error-rate {args.max_error_rate:g}); see the reasons above",
            file=sys.stderr,
        )
        sys.exit(1)


def _ray_module() -> Any:
    """:mod:`agentenv.scale.ray` for ``--ray``; a usage error naming the extra without ray."""
    try:
        require_ray()
    except ImportError as exc:
        raise SystemExit(str(exc)) from exc
    from agentenv.scale import ray as scale_ray  # the ray extra: imported only with --ray

    return scale_ray


def _add_ray_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help=f"{what} on a Ray cluster: 'local' (the default: a private cluster on this machine, "
        "stopped at the end), 'auto' (the one `ray start` runs here) or HOST:PORT of a "
        "cluster's head; needs the ray extra (docs/scale.md)",
    )


def cmd_serve_policy(args: argparse.Namespace) -> None:
    serve_policy = torch_part("serve_policy")
    console.print(f"serving {args.model} at http://{args.host}:{args.port}/v1 (Ctrl-C stops)")
    serve_policy(
        args.model,
        host=args.host,
        port=args.port,
        tool_parser=args.tool_parser,
        prefix_cache_mib=args.prefix_cache_mib,
    )


def cmd_models(args: argparse.Namespace) -> None:
    path = prepare(args.name)
    console.print(f"{args.name} ready at {path}")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> None:
    if not args.config and not args.resume:
        raise SystemExit("agentenv train: give a CONFIG file or --resume RUN_DIR")
    overrides = list(args.set or [])
    if args.ray is not None:
        _ray_module()
        overrides.append(f"ray.address={json.dumps(args.ray)}")
    run_dir = torch_part("train")(args.config, overrides=overrides, resume=args.resume)
    summary = torch_part("read_summary")(run_dir)
    console.print(torch_part("summary_line")(summary), highlight=False)


def cmd_sft(args: argparse.Namespace) -> None:
    run_dir = torch_part("sft")(args.config, overrides=args.set or [])
    console.print(f"run folder: {run_dir}")


def cmd_report(args: argparse.Namespace) -> None:
    console.print(f"report: {torch_part('write_report')(Path(args.run_dir))}")


def cmd_view(args: argparse.Namespace) -> None:
    """Serve the viewer of a run on 127.0.0.1, or write it as one HTML file (``--html``)."""
    if args.html is None:
        if args.max_episodes is not None:
            raise SystemExit("agentenv view: --max-episodes goes with --html OUT")
        app = create_app(args.source)  # a bad run fails here, before the server starts
        url = f"http://127.0.0.1:{args.port}"
        console.print(f"viewing {args.source} at {url} (Ctrl-C stops)", highlight=False)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
        return
    done = export_html(open_run(args.source), args.html, max_episodes=args.max_episodes)
    console.print(
        f"wrote {done.path} ({done.bytes / 1e6:.1f} MB, {done.embedded} of {done.total} "
        f"episodes) in {done.seconds:.1f} s",
        highlight=False,
    )


def cmd_quickstart(args: argparse.Namespace) -> None:
    torch_part("quickstart")(out_dir=args.out)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentenv", description="Multi-turn text environments and RL for LLM agents"
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers envs); looked up in the current directory too",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list environments and services")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="protocol, reward and knobs of an environment")
    p.add_argument("env")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("check", help="check that an environment keeps the TextEnv contract")
    p.add_argument("env", help="env id, or module:Class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bad-actions", type=int, default=BAD_ACTIONS, metavar="N")
    p.add_argument(
        "--max-steps", type=int, default=MAX_STEPS, metavar="N", help="bound of an episode"
    )
    p.add_argument("--env-arg", action="append", metavar="KEY=VALUE", help="env constructor kwarg")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("play", help="play an environment by hand in the terminal")
    p.add_argument("env")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-arg", action="append", metavar="KEY=VALUE", help="env constructor kwarg")
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("serve", help="run an env family's tool service (e.g. search)")
    p.add_argument("name")
    p.add_argument("--corpus", help="corpus JSONL ({'id','contents'} rows) to serve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="service config value")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("eval", help="evaluate a policy on an env or a suite")
    p.add_argument("--env")
    p.add_argument("--suite", help="suite YAML file or built-in name (core)")
    p.add_argument(
        "--policy", required=True, help="path | tiny | smollm2 | openai:URL#model | expert | random"
    )
    p.add_argument("--tokenizer", help="tokenizer folder or spec for an openai: policy")
    p.add_argument(
        "-n",
        type=int,
        default=None,
        help="tasks per env (default: the suite's; else all tasks of a finite split, or 50)",
    )
    p.add_argument("-k", type=int, default=1, help="samples per task (pass@k)")
    p.add_argument(
        "--split", default=None, help="split to play (default: the env's 'test' split, if any)"
    )
    p.add_argument(
        "--max-error-rate",
        type=float,
        default=0.0,
        help="exit non-zero when more than this share of episodes errored (default 0)",
    )
    p.add_argument("--env-arg", action="append", metavar="KEY=VALUE")
    p.add_argument("--out", help="folder for results.jsonl, metadata.json, summary.png")
    p.add_argument("--resume", action="store_true", help="re-run only missing or errored episodes")
    p.add_argument(
        "--no-transcripts",
        action="store_true",
        help="leave the episode transcripts (chat, tokens, loss mask) out of results.jsonl",
    )
    p.add_argument("--max-turns", type=int, default=None)
    p.add_argument(
        "--max-tokens-per-turn",
        type=int,
        default=None,
        help="generation budget of one action (default: the env's; 256 for most envs)",
    )
    p.add_argument(
        "--max-context-tokens",
        type=int,
        default=None,
        help="budget of a whole episode (default: the env's; 4096 for most envs)",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--tool-parser",
        choices=tuple(PARSERS),
        default=None,
        help="tool-call format of envs with native tools (default: detected from the template)",
    )
    _add_ray_option(p, "play the episodes")
    p.add_argument(
        "--ray-workers",
        type=int,
        default=0,
        metavar="N",
        help="with --ray: rollout worker actors (default 0: one per node)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve-policy", help="OpenAI-compatible server over a local model")
    p.add_argument("model", help="path | tiny | smollm2")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument(
        "--tool-parser",
        choices=tuple(PARSERS),
        default=None,
        help="tool-call format of the model (default: detected from its chat template)",
    )
    p.add_argument(
        "--prefix-cache-mib",
        type=float,
        default=0.0,
        help="memory for finished requests' keys and values, reused by a later prompt that "
        "extends them, e.g. a chat's next turn (default 0: off; docs/policies.md)",
    )
    p.set_defaults(func=cmd_serve_policy)

    p = sub.add_parser("models", help="prepare offline models")
    models = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prep = models.add_parser("prepare", help="build or unpack a model into the cache")
    prep.add_argument("name", choices=["tiny", "smollm2"])
    prep.set_defaults(func=cmd_models)

    for name, func, help_text in (
        ("train", cmd_train, "RL-train a policy from a YAML config"),
        ("sft", cmd_sft, "supervised warm start on expert trajectories"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", nargs="?")
        p.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="override a config value"
        )
        if name == "train":
            p.add_argument("--resume", type=Path, metavar="RUN_DIR")
            _add_ray_option(p, "play the rollouts and held-out evaluations")
        p.set_defaults(func=func)

    p = sub.add_parser("report", help="Markdown report with learning curves of a run")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("view", help="browse a run's episodes, rewards, credit and tokens")
    p.add_argument(
        "source",
        metavar="RUN",
        help="an eval folder or its results.jsonl, a training run folder, or a trajectories JSONL",
    )
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    p.add_argument("--html", metavar="OUT", help="write one self-contained HTML file instead")
    p.add_argument(
        "--max-episodes",
        type=int,
        default=None,
        metavar="N",
        help="with --html: embed the transcripts of the first N episodes only (default: all)",
    )
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("quickstart", help="the README's main job")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_quickstart)
    return parser


def error_message(exc: BaseException) -> str:
    """What ``agentenv`` prints for a user error: the message, with each key path of a pydantic
    error, and the file name of a file error."""
    if isinstance(exc, ValidationError):
        lines = [f"invalid {exc.title}:"]
        for err in exc.errors():
            path = ".".join(str(part) for part in err["loc"]) or "<root>"
            lines.append(f"  {path}: {err['msg']}")
        return "\n".join(lines)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, yaml.YAMLError):
        return f"invalid YAML: {exc}"
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if " " not in message.strip():  # a bare key or value says nothing without its type
        return f"{type(exc).__name__}: {message}"
    return message


def _fail(message: str, status: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _importable_here() -> None:
    """Put the current directory on the import path, as ``python -m agentenv`` does, so
    ``--import MODULE`` and ``module:Class`` ids find modules next to the user."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _importable_here()
    try:
        for module in args.imports:
            import_env_module(module)
        args.func(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit as exc:
        if args.debug or not isinstance(exc.code, str):
            raise
        _fail(exc.code, EXIT_USAGE)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        _fail(error_message(exc), EXIT_USAGE)
    except EpisodesFailedError as exc:
        if args.debug:
            raise
        _fail(str(exc), EXIT_FAILURE)
    except Exception as exc:
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        _fail(
            f"{type(exc).__name__}: {first}\n(unexpected: run with --debug for the traceback)",
            EXIT_FAILURE,
        )
