"""Validated bugs as SWE-bench instances: run a pinned package's suite in bwrap, mutate, rerun.

SWE-smith's validation rule (Yang et al. 2025, arXiv 2504.21798; ``harness/valid.py``): the suite
runs twice on the clean code and the tests that pass both times form the stable pass set; a
mutation is kept when at least one of them fails with it (FAIL_TO_PASS), at least one still passes
(PASS_TO_PASS), the run did not time out, the failures repeat on a second run, and (our extra
rule) no more than ``max_fail_fraction`` of the stable set fails. The problem statement is built
from the failing tests alone (names, assertion messages, test-file frames), never from the patch.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import random
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentenv.cache import cache_root
from agentenv.envs.swe.mutations import FAMILIES, Mutation, combine, mutate, sites, unified_diff
from agentenv.envs.swe.packages import Package, fetch, package
from agentenv.sandbox import Limits, MiB, Sandbox

FACTORY_VERSION = 1
"""Bumped when validation or the instance format changes (part of the cache key)."""

PASSING = ("PASSED", "XFAIL")
_STATUS = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (.+?)\s*$")
_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$")


def parse_statuses(output: str) -> dict[str, str]:
    """``{test id: status}`` from pytest ``-rA`` summary lines (as SWE-bench's parse_log_pytest)."""
    statuses: dict[str, str] = {}
    for line in output.splitlines():
        match = _STATUS.match(line)
        if match is None:
            continue
        status, rest = match.groups()
        if status in ("FAILED", "ERROR") and " - " in rest:
            rest = rest.split(" - ", 1)[0]
        if "::" in rest or rest.endswith(".py"):
            statuses.setdefault(rest.strip(), status)
    return statuses


def failure_sections(output: str) -> dict[str, list[str]]:
    """The ``--tb=short`` traceback section of each failing test, by its header name."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("=") and ("short test summary" in line or "PASSES" in line):
            current = None
            continue
        match = _SECTION.match(line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return sections


def problem_statement(pkg: Package, failing: list[str], output: str, limit: int = 3) -> str:
    """An issue text from the failing tests: names, assertion messages and test-file frames.

    Frames outside ``pkg.test_dir`` (the library code, where the bug is) are left out.
    """
    sections = failure_sections(output)
    shown = failing[:8]
    text = [
        f"Some tests of {pkg.name} {pkg.version} fail.",
        "",
        f"`{pkg.test_cmd.split(' ', 1)[1]}` reports {len(failing)} failing test(s):",
        "",
    ]
    text += [f"- `{t}`" for t in shown]
    if len(failing) > len(shown):
        text.append(f"- ... and {len(failing) - len(shown)} more")
    for test in failing[:limit]:
        lines = sections.get(test.split("::", 1)[-1].replace("::", "."))
        if not lines:
            continue
        keep: list[str] = []
        in_test = False
        for line in lines:
            if re.match(r"^\S+\.py:\d+: ", line):
                in_test = line.startswith(pkg.test_dir.rstrip("/") + "/")
                if in_test:
                    keep.append(line)
            elif line.startswith("E ") or in_test and line.strip():
                keep.append(line)
        if keep:
            text += ["", f"`{test}`:", "", "```", *keep[:25], "```"]
    return "\n".join(text) + "\n"


@dataclass
class Instance:
    """A task in SWE-bench's fields; ``patch`` is the fix (the inverse of ``bug_patch``)."""

    instance_id: str
    repo: str
    base_commit: str
    patch: str
    test_patch: str
    problem_statement: str
    hints_text: str
    created_at: str
    version: str
    FAIL_TO_PASS: list[str]
    PASS_TO_PASS: list[str]
    environment_setup_commit: str
    bug_patch: str
    test_cmd: str
    test_dir: str
    package: str
    sdist_sha256: str
    mutated_files: list[str]
    functions: list[str]
    families: list[str]
    image: str = ""
    """The container image that holds the buggy repo (loaded SWE-bench/SWE-smith rows); ``""``:
    the tree is ``package``'s sdist with ``bug_patch`` applied, run in bwrap."""

    def to_swebench(self) -> dict[str, object]:
        """A SWE-bench dataset row: FAIL_TO_PASS/PASS_TO_PASS as JSON strings."""
        row: dict[str, object] = asdict(self)
        row["FAIL_TO_PASS"] = json.dumps(self.FAIL_TO_PASS)
        row["PASS_TO_PASS"] = json.dumps(self.PASS_TO_PASS)
        return row


@dataclass
class Stats:
    """What one build did: candidates run, bugs kept, seconds."""

    candidates: int = 0
    validated: int = 0
    seconds: float = 0.0
    clean_seconds: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Candidate:
    files: dict[str, str]  # path -> mutated source
    mutations: tuple[Mutation, ...]


def _limits(timeout: float) -> Limits:
    return Limits(timeout=timeout, cpu_seconds=int(timeout), disk=256 * MiB, max_output=1 << 22)


async def _suite(sb: Sandbox, pkg: Package, timeout: float) -> tuple[dict[str, str], str, bool]:
    result = await sb.run(pkg.test_cmd, timeout=timeout)
    return parse_statuses(result.output), result.output, result.timed_out


async def stable_passes(
    root: Path, pkg: Package, runs: int = 2, timeout: float = 120
) -> tuple[list[str], float]:
    """Tests passing in every one of ``runs`` clean runs, and the mean seconds of a run."""
    async with Sandbox.create("bwrap", limits=_limits(timeout)) as sb:
        await sb.copy_in(root, ".")
        passing: set[str] | None = None
        start = time.monotonic()
        for _ in range(runs):
            statuses, output, timed_out = await _suite(sb, pkg, timeout)
            if timed_out or not statuses:
                raise RuntimeError(f"clean suite of {pkg.slug} did not run:\n{output[-2000:]}")
            now = {t for t, s in statuses.items() if s in PASSING}
            passing = now if passing is None else passing & now
        return sorted(passing or ()), (time.monotonic() - start) / runs


def _instance(
    pkg: Package, root: Path, cand: _Candidate, f2p: list[str], p2p: list[str], output: str
) -> Instance:
    bug = "".join(
        unified_diff((root / f).read_text(), src, f) for f, src in sorted(cand.files.items())
    )
    fix = "".join(
        unified_diff(src, (root / f).read_text(), f) for f, src in sorted(cand.files.items())
    )
    families = sorted({m.family for m in cand.mutations})
    kind = families[0] if len(cand.mutations) == 1 else f"combine{len(cand.mutations)}"
    digest = hashlib.sha256(bug.encode()).hexdigest()[:8]
    return Instance(
        instance_id=f"{pkg.slug}.{kind}.{digest}",
        repo=f"pypi/{pkg.name}",
        base_commit=pkg.sha256,
        patch=fix,
        test_patch="",
        problem_statement=problem_statement(pkg, f2p, output),
        hints_text="",
        created_at="",
        version=pkg.version,
        FAIL_TO_PASS=f2p,
        PASS_TO_PASS=p2p,
        environment_setup_commit=pkg.sha256,
        bug_patch=bug,
        test_cmd=pkg.test_cmd,
        test_dir=pkg.test_dir,
        package=pkg.name,
        sdist_sha256=pkg.sha256,
        mutated_files=sorted(cand.files),
        functions=[f"{m.file}::{m.function}" for m in cand.mutations],
        families=families,
    )


class Validator:
    """Runs candidates in ``workers`` bwrap sandboxes, each holding one copy of the clean tree."""

    def __init__(
        self,
        pkg: Package,
        root: Path,
        stable: list[str],
        *,
        timeout: float = 120,
        max_fail_fraction: float = 0.5,
    ) -> None:
        self.pkg, self.root, self.stable = pkg, root, stable
        self.timeout, self.max_fail_fraction = timeout, max_fail_fraction
        self.stats = Stats()

    def _reject(self, why: str) -> None:
        self.stats.rejected[why] = self.stats.rejected.get(why, 0) + 1

    async def check(self, sb: Sandbox, cand: _Candidate) -> Instance | None:
        """Validate one candidate in ``sb`` (restored to the clean tree afterwards)."""
        self.stats.candidates += 1
        try:
            for path, src in cand.files.items():
                await sb.write_file(path, src)
            runs = []
            for _ in range(2):
                statuses, output, timed_out = await _suite(sb, self.pkg, self.timeout)
                if timed_out:
                    self._reject("timeout")
                    return None
                f2p = [t for t in self.stable if statuses.get(t) not in PASSING]
                runs.append((f2p, output, statuses))
                if not f2p:
                    self._reject("no FAIL_TO_PASS")
                    return None
                if len(f2p) > self.max_fail_fraction * len(self.stable):
                    self._reject("too many failures")
                    return None
            (f2p, output, _), (again, _, _) = runs
            if f2p != again:
                self._reject("flaky")
                return None
            p2p = [t for t in self.stable if t not in set(f2p)]
            if not p2p:
                self._reject("no PASS_TO_PASS")
                return None
            self.stats.validated += 1
            return _instance(self.pkg, self.root, cand, f2p, p2p, output)
        finally:
            for path in cand.files:
                await sb.write_file(path, (self.root / path).read_bytes())

    async def run(
        self, candidates: Iterable[_Candidate], want: int, workers: int
    ) -> list[tuple[_Candidate, Instance]]:
        """Validate candidates in order until ``want`` are kept; results in candidate order."""
        found: dict[int, tuple[_Candidate, Instance]] = {}
        pending = enumerate(candidates)

        async def worker() -> None:
            async with Sandbox.create("bwrap", limits=_limits(self.timeout)) as sb:
                await sb.copy_in(self.root, ".")
                while len(found) < want:
                    item = next(pending, None)
                    if item is None:
                        return
                    index, cand = item
                    instance = await self.check(sb, cand)
                    if instance is not None:
                        found[index] = (cand, instance)

        await asyncio.gather(*(worker() for _ in range(workers)))
        return [found[i] for i in sorted(found)][:want]


def candidates(pkg: Package, root: Path, seed: int, families: tuple[str, ...]) -> list[_Candidate]:
    """Every single-function mutation of the package's sources, shuffled by ``seed``."""
    pool: list[tuple[str, str, int]] = []
    texts = {f: (root / f).read_text() for f in pkg.source_files(root)}
    for file, text in texts.items():
        for family in families:
            pool += [(file, family, site) for site in sites(text, family)]
    random.Random(seed).shuffle(pool)
    seen: set[str] = set()
    for file, family, site in pool:
        mutation = mutate(texts[file], file, family, site, seed)
        if mutation is None or mutation.new_source in seen:
            continue
        seen.add(mutation.new_source)
        yield _Candidate({file: mutation.new_source}, (mutation,))


def _combos(root: Path, singles: list[_Candidate], bugs: int) -> list[_Candidate]:
    """Group validated single bugs of one file, in distinct functions, ``bugs`` at a time."""
    by_file: dict[str, list[Mutation]] = {}
    for cand in singles:
        (mutation,) = cand.mutations
        group = by_file.setdefault(mutation.file, [])
        if all(m.function != mutation.function for m in group):
            group.append(mutation)
    out = []
    for file, group in sorted(by_file.items()):
        for i in range(0, len(group) - bugs + 1, bugs):
            chunk = tuple(group[i : i + bugs])
            text = combine((root / file).read_text(), list(chunk))
            out.append(_Candidate({file: text}, chunk))
    return out


def instances_path(
    pkg: Package, n: int, seed: int, families: tuple[str, ...], bugs: int, cache: Path
) -> Path:
    key = json.dumps([FACTORY_VERSION, pkg.slug, pkg.sha256, n, seed, list(families), bugs])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache / "swe" / "instances" / f"{pkg.slug}.{digest}.jsonl"


async def abuild_instances(
    name: str,
    n: int = 10,
    seed: int = 0,
    families: tuple[str, ...] | list[str] | None = None,
    *,
    bugs: int = 1,
    workers: int = 4,
    timeout: float = 120,
    max_candidates: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    stats: Stats | None = None,
) -> list[Instance]:
    """Up to ``n`` validated instances of package ``name`` (cached as JSONL, reused).

    ``families``: mutation families (default all); ``bugs``: mutations combined per instance
    (in distinct functions of one file); ``max_candidates``: stop after this many candidates.
    """
    pkg = package(name)
    fams = tuple(sorted(set(families or FAMILIES)))
    unknown = set(fams) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown mutation families {sorted(unknown)}; known: {FAMILIES}")
    path = instances_path(pkg, n, seed, fams, bugs, cache_root(cache))
    if path.exists():
        return [Instance(**json.loads(line)) for line in path.read_text().splitlines() if line]
    start = time.monotonic()
    root = fetch(name, cache)
    stable, clean_seconds = await stable_passes(root, pkg, timeout=timeout)
    # a bug that hangs the suite (a removed loop exit) costs one run timeout: keep it short
    validator = Validator(pkg, root, stable, timeout=min(timeout, max(10.0, 10 * clean_seconds)))
    pool = itertools.islice(candidates(pkg, root, seed, fams), max_candidates)
    if bugs == 1:
        kept = await validator.run(pool, n, workers)
    else:
        singles = await validator.run(pool, n * bugs * 2, workers)
        kept = await validator.run(_combos(root, [c for c, _ in singles], bugs), n, workers)
    found = [instance for _, instance in kept]
    target = stats if stats is not None else Stats()
    target.candidates, target.validated = validator.stats.candidates, validator.stats.validated
    target.rejected, target.clean_seconds = validator.stats.rejected, clean_seconds
    target.seconds = time.monotonic() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(i)) + "\n" for i in found))
    os.replace(tmp, path)
    return found


def build_instances(
    name: str,
    n: int = 10,
    seed: int = 0,
    families: tuple[str, ...] | list[str] | None = None,
    **options: object,
) -> list[Instance]:
    """Synchronous :func:`abuild_instances` (for scripts; not inside a running event loop)."""
    return asyncio.run(abuild_instances(name, n, seed, families, **options))  # type: ignore[arg-type]
