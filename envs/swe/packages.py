"""Pinned PyPI sdists that ship fast test suites, and fetching them once into the cache.

Each sdist is downloaded by pip (``pip download --no-deps --no-binary :all: NAME==VERSION``)
into ``cache_root()/swe/sdists``, checked against its pinned sha256 and extracted once to
``cache_root()/swe/src/NAME-VERSION``. Pins and suite timings: ``docs/envs/swe.md``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentenv.cache import cache_root

TEST_FLAGS = "-rA -q -p no:cacheprovider --tb=short --color=no"
"""pytest flags of every run: ``-rA`` prints one ``STATUS test-id`` line per test."""


@dataclass(frozen=True)
class Package:
    """One pinned sdist: where its tests and its mutable sources are, relative to its root."""

    name: str
    version: str
    sha256: str
    test_dir: str
    sources: tuple[str, ...]
    """Source files or folders (relative to the root) whose ``.py`` files may be mutated."""

    @property
    def slug(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def test_cmd(self) -> str:
        """The suite's command, run from the package root (no bytecode: files change per run)."""
        return f"PYTHONDONTWRITEBYTECODE=1 python -m pytest {TEST_FLAGS} {self.test_dir}"

    def source_files(self, root: Path) -> list[str]:
        """The mutable ``.py`` files under ``root``, relative and sorted, tests excluded."""
        found: set[str] = set()
        for entry in self.sources:
            path = root / entry
            for file in [path] if path.is_file() else path.rglob("*.py"):
                rel = file.relative_to(root).as_posix()
                if not rel.startswith(self.test_dir.rstrip("/") + "/"):
                    found.add(rel)
        return sorted(found)


PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package(
            "h11",
            "0.16.0",
            "4e35b956cf45792e4caa5885e69fba00bdbc6ffafbfa020300e549b208ee5ff1",
            "h11/tests",
            ("h11",),
        ),
        Package(
            "xmltodict",
            "1.0.4",
            "6d94c9f834dd9e44514162799d344d815a3a4faec913717a9ecbfa5be1bb8e61",
            "tests",
            ("xmltodict.py",),
        ),
        Package(
            "tinydb",
            "4.9.0",
            "6928b1fa785186bda7952a0ba05aaeedc883ede565ca9c7d608de44e5e75de70",
            "tests",
            ("tinydb",),
        ),
        Package(
            "sqlparse",
            "0.6.1",
            "ca722573f848ff2d30e40ea30f53a104b7dea7635ea9285891263eb2c58fb6e7",
            "tests",
            ("sqlparse",),
        ),
        Package(
            "boltons",
            "26.2.0",
            "d39cfd15c1a1c3bd4d705c82252fa9edb8e4f5e8cc039f8e39afac7b1b47e92c",
            "tests",
            ("boltons",),
        ),
    )
}
"""The manifest: every package the factory knows, by name."""


class FetchError(RuntimeError):
    """pip could not download the sdist, or its sha256 differs from the pin."""


def package(name: str) -> Package:
    """The manifest entry of ``name``."""
    try:
        return PACKAGES[name]
    except KeyError:
        raise KeyError(f"unknown package {name!r}; known: {', '.join(PACKAGES)}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sdist_path(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """The sdist of ``name`` in the cache, downloaded by pip and sha256-checked the first time."""
    pkg = package(name)
    folder = cache_root(cache) / "swe" / "sdists"
    target = folder / f"{pkg.slug}.tar.gz"
    if target.exists() and sha256_file(target) == pkg.sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["--disable-pip-version-check", "-q", "-d", tmp, f"{pkg.name}=={pkg.version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise FetchError(f"pip download {pkg.slug} failed:\n{done.stderr[-2000:]}")
        got = sorted(Path(tmp).glob("*.tar.gz"))
        if len(got) != 1:
            raise FetchError(f"pip download {pkg.slug} gave {[p.name for p in got]}")
        digest = sha256_file(got[0])
        if digest != pkg.sha256:
            raise FetchError(f"{got[0].name}: sha256 {digest}, pinned {pkg.sha256}")
        os.replace(got[0], target)
    return target


def fetch(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """The extracted source tree of ``name`` (``cache_root()/swe/src/NAME-VERSION``), made once."""
    pkg = package(name)
    dest = cache_root(cache) / "swe" / "src" / pkg.slug
    if (dest / ".agentenv-complete").exists():
        return dest
    archive = sdist_path(name, cache)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        tops = list(Path(tmp).iterdir())
        if len(tops) != 1 or not tops[0].is_dir():
            raise FetchError(f"{archive.name}: expected one top folder, got {tops}")
        (tops[0] / ".agentenv-complete").write_text(pkg.sha256 + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tops[0], dest)
    return dest
