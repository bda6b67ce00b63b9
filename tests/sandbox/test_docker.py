"""The docker/podman backend: the container it asks for, and its image workspace on an engine.

The container arguments come from a pure function, checked here without an engine; the rest runs
against docker and podman, each skipped with the reason where no engine answers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

from agentenv.sandbox import DockerSandbox, Limits, MiB, PodmanSandbox, Sandbox
from agentenv.sandbox.docker import (
    DEFAULT_IMAGE,
    LABEL,
    MAIN_USER,
    ROOT,
    USER,
    container_config,
    engine_client,
)
from tests.sandbox.support import engine_params

LIMITS = Limits(address_space=512 * MiB, processes=64, disk=64 * MiB, tmp_size=16 * MiB)

TESTBED_IMAGE = f"""\
FROM {DEFAULT_IMAGE}
RUN mkdir -p /testbed/pkg && printf 'seed\\n' > /testbed/seed.txt
"""
"""A tiny image with a repo-like ``/testbed`` (builds without network)."""


def build_image(client: Any, dockerfile: str, tag: str) -> str:
    """Build ``dockerfile`` (no context, no network, no pull) as ``tag``; the tag."""
    client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none", pull=False
    )
    return tag


def owned_volumes(client: Any) -> set[str]:
    """Names of the sandbox volumes this process owns."""
    return {v.name for v in client.volumes.list(filters={"label": f"{LABEL}={os.getpid()}"})}


@pytest.fixture(params=engine_params())
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, str]]:
    """``(backend, client, testbed image)`` for each engine that answers here."""
    client = engine_client(request.param)
    tag = build_image(client, TESTBED_IMAGE, "agentenv-test/testbed:1")
    yield request.param, client, tag
    client.images.remove(tag, force=True)
    client.close()


# -- the container's arguments (no engine) ---------------------------------------------------
def test_default_container_is_todays_tmpfs_workspace() -> None:
    config = container_config("img", "/workspace", {"HOME": "/workspace"}, LIMITS, owner=42)
    assert "mounts" not in config
    assert config["tmpfs"] == {
        "/tmp": f"size={16 * MiB},mode=1777",
        "/dev/shm": f"size={16 * MiB},mode=1777",
        "/workspace": f"size={64 * MiB},mode=1777",
    }
    assert (config["image"], config["working_dir"], config["user"]) == (
        "img",
        "/workspace",
        MAIN_USER,
    )
    assert config["labels"] == {LABEL: "42"} and config["environment"] == {"HOME": "/workspace"}
    assert config["network_disabled"] and config["read_only"] and config["init"]
    assert config["cap_drop"] == ["ALL"] and config["security_opt"] == ["no-new-privileges"]
    assert config["mem_limit"] == config["memswap_limit"] == 512 * MiB
    assert config["pids_limit"] == 64
    limits = {u["name"]: (u["soft"], u["hard"]) for u in config["ulimits"]}
    assert limits == {
        "cpu": (LIMITS.cpu_seconds,) * 2,
        "fsize": (LIMITS.file_size,) * 2,
        "nofile": (LIMITS.open_files,) * 2,
    }


def test_image_workspace_mounts_a_volume_and_keeps_the_rest() -> None:
    tmpfs = container_config("img", "/testbed", {}, LIMITS, owner=42)
    volume = container_config("img", "/testbed", {}, LIMITS, owner=42, volume="vol-1")
    assert volume["mounts"] == [
        {"Type": "volume", "Source": "vol-1", "Target": "/testbed", "ReadOnly": False}
    ]
    assert volume["tmpfs"] == {k: v for k, v in tmpfs["tmpfs"].items() if k != "/testbed"}
    rest = {k: v for k, v in volume.items() if k not in ("mounts", "tmpfs")}
    assert rest == {k: v for k, v in tmpfs.items() if k != "tmpfs"}


def test_workspace_option_sets_user_home_and_workdir() -> None:
    default = Sandbox.create("docker")
    assert isinstance(default, DockerSandbox) and default.workspace == "tmpfs"
    assert (default.workdir, default.user, default.env["HOME"]) == (
        "/workspace",
        USER,
        "/workspace",
    )
    image = Sandbox.create("podman", image="x", workdir="/testbed", workspace="image")
    assert isinstance(image, PodmanSandbox) and image.workspace == "image"
    assert (image.workdir, image.user, image.env["HOME"]) == ("/testbed", ROOT, "/tmp")
    assert Sandbox.create("docker", workspace="image", env={"HOME": "/h"}).env["HOME"] == "/h"
    assert USER != MAIN_USER != ROOT  # a command's kill -9 -1 cannot reach the main process
    with pytest.raises(ValueError, match="workspace"):
        Sandbox.create("docker", workspace="bind")
    with pytest.raises(ValueError, match="workdir"):
        Sandbox.create("docker", workdir="testbed")


# -- on an engine ----------------------------------------------------------------------------
async def test_tmpfs_workspace_survives_each_commands_cleanup(engine: tuple[str, Any, str]) -> None:
    backend, _, _ = engine
    async with Sandbox.create(backend, limits=LIMITS) as sb:
        first = await sb.run("sleep 30 & echo started")
        second = await sb.run("id -u; cat /proc/[0-9]*/comm | grep -c '^sleep$'")
    assert first.output == "started\n"
    assert second.output.split() == ["65534", "0"]


async def test_image_workspace_end_to_end(engine: tuple[str, Any, str]) -> None:
    backend, client, tag = engine
    before = owned_volumes(client)
    sb = Sandbox.create(backend, limits=LIMITS, image=tag, workdir="/testbed", workspace="image")
    async with sb:
        (volume,) = owned_volumes(client) - before
        assert await sb.read_file("seed.txt") == "seed\n"  # the image's content
        await sb.write_file("pkg/new.py", "x = 1\n")
        result = await sb.run("cat pkg/new.py; echo more >> seed.txt; id -u; pwd; echo $HOME")
        assert result.output == "x = 1\n0\n/testbed\n/tmp\n", result.output
        locked = await sb.run("touch /etc/x || echo read-only; grep CapEff /proc/self/status")
        assert "read-only" in locked.output and "0000000000000000" in locked.output
        assert (await sb.read_file("/testbed/seed.txt")) == "seed\nmore\n"
    assert volume not in owned_volumes(client)
    async with Sandbox.create(backend, image=tag, workdir="/testbed", workspace="image") as fresh:
        assert await fresh.read_file("seed.txt") == "seed\n"  # no sandbox sees another's changes
        assert (await fresh.run("test -e pkg/new.py")).returncode == 1
