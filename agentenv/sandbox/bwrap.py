"""The bubblewrap backend (the default): namespaces, a minimal read-only root and rlimits.

Each command is ``prlimit … bwrap … [setpriv …] bash -c COMMAND``:

- **namespaces**: pid (the command is pid 2; when it exits, or bwrap dies, the kernel kills
  everything left in the namespace), network (only its own loopback), ipc, uts, cgroup; a new
  session (no terminal to inject into); ``--die-with-parent``.
- **filesystem**: a fresh root holding read-only binds of ``/usr`` and ``/etc`` (and the
  ``/bin``-style links), the interpreter's prefixes (the venv and base Python, so ``python -m
  pytest`` works) and ``ro_binds``; a new ``/proc``, a minimal ``/dev``, private size-capped
  tmpfs at ``/tmp`` and ``/dev/shm``, the workspace read-write at ``workdir``, and nothing else
  (no host ``/home``, ``/root``, ``/tmp``, ``/run``, ``/var``, ``/srv``, project checkout...).
- **identity**: as host root, bwrap sets up the mounts as root and ``setpriv`` then drops to the
  sandbox's own uid (no groups, no capabilities, empty bounding set, ``no_new_privs``) so
  ``RLIMIT_NPROC`` binds; otherwise bwrap runs unprivileged in a user namespace as the current
  user (then ``processes`` counts all of that user's processes, and the workspace is a plain
  folder whose size only ``file_size`` bounds per file).
- **limits**: ``prlimit`` sets ``RLIMIT_AS``, ``CPU``, ``FSIZE``, ``NOFILE`` and ``NPROC``
  (soft = hard); the wall-clock timeout kills bwrap's process group.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from agentenv.sandbox.base import Limits, SandboxError
from agentenv.sandbox.host import HostSandbox

SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Host paths shown read-only (a symlink, e.g. ``/bin -> usr/bin``, is recreated as one)."""

TMPFS = ("/tmp", "/dev/shm")
"""The private, size-capped tmpfs of every command (``Limits.tmp_size`` each)."""

WORKDIR = "/workspace"
INSTALL_HINT = "install bubblewrap: bash scripts/setup.sh (or apt-get install -y bubblewrap)"


def tool(name: str) -> str:
    """The absolute path of a host program the backend needs, or a :class:`SandboxError`."""
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
    if path is None:
        hint = INSTALL_HINT if name == "bwrap" else "install util-linux (setpriv, prlimit)"
        raise SandboxError(f"{name} not found; {hint}")
    return path


def python_prefixes() -> list[str]:
    """This interpreter's prefixes (venv and base installation) outside the system dirs."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= {str(Path(sys.executable).resolve().parent.parent)}
    real = sorted({str(Path(p).resolve()) for p in paths} | paths)
    return [p for p in real if not _under(p, SYSTEM_DIRS) and Path(p).is_dir()]


def _under(path: str, tops: Iterable[str]) -> bool:
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in tops)


def rlimit_args(limits: Limits) -> list[str]:
    """``prlimit`` options for ``limits`` (soft = hard)."""
    return [
        f"--as={limits.address_space}",
        f"--cpu={limits.cpu_seconds}",
        f"--fsize={limits.file_size}",
        f"--nofile={limits.open_files}",
        f"--nproc={limits.processes}",
    ]


def mount_args(workspace: Path, workdir: str, ro_binds: Sequence[str], limits: Limits) -> list[str]:
    """bwrap's filesystem options: system dirs, /proc, /dev, tmpfs, read-only binds, workspace.

    Order matters: a tmpfs hides binds made under it before, so tmpfs come first."""
    args: list[str] = []
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for tmp in TMPFS:
        args += ["--perms", "1777", "--size", str(limits.tmp_size), "--tmpfs", tmp]
    binds = [*ro_binds, workdir]
    for folder in _parents(binds):
        args += ["--perms", "0755", "--dir", folder]
    for path in ro_binds:
        args += ["--ro-bind", path, path]
    return [*args, "--bind", str(workspace), workdir, "--remount-ro", "/", "--chdir", workdir]


def _parents(paths: Iterable[str]) -> list[str]:
    """Folders to create (mode 0755) above the bind targets, outermost first."""
    seen: dict[str, None] = {}
    for path in paths:
        for parent in reversed(PurePosixPath(path).parents):
            text = str(parent)
            if text not in ("/", *TMPFS) and not _under(text, SYSTEM_DIRS):
                seen[text] = None
    return list(seen)


class BwrapSandbox(HostSandbox, backend="bwrap"):
    """Commands run under bubblewrap (see the module docstring for what that isolates).

    ``workdir`` (``/workspace``) is where the commands see the workspace; ``ro_binds`` are
    further host paths shown read-only at the same place (a dataset, a tool chain).
    """

    def __init__(
        self,
        limits: Limits,
        *,
        root: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str = WORKDIR,
        ro_binds: Sequence[str | Path] = (),
    ) -> None:
        super().__init__(limits, root=root, env=env)
        if not PurePosixPath(workdir).is_absolute() or workdir == "/":
            raise ValueError(f"workdir must be an absolute path below /, got {workdir!r}")
        self._workdir = workdir
        self.ro_binds = [*python_prefixes(), *(str(Path(p).resolve()) for p in ro_binds)]
        self.own_uid = os.geteuid() == 0
        self._tools = {name: tool(name) for name in ("bwrap", "prlimit", "setpriv", "bash")}
        for name in ("setpriv", "bash"):
            if not _under(self._tools[name], SYSTEM_DIRS):
                raise SandboxError(f"{self._tools[name]} is not in a folder sandboxes see")

    @property
    def workdir(self) -> str:
        return self._workdir

    def argv(self, command: str) -> list[str]:
        ws = self.workspace
        bwrap = [self._tools["bwrap"], "--die-with-parent", "--new-session", "--as-pid-1"]
        if self.own_uid:
            bwrap += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
            bwrap += ["--unshare-cgroup-try"]
        else:
            bwrap += ["--unshare-all"]
        bwrap += ["--hostname", "sandbox", "--clearenv"]
        for key, value in self.command_env().items():
            bwrap += ["--setenv", key, value]
        bwrap += mount_args(ws.path, self.workdir, self.ro_binds, self.limits)
        user = ["bash", "-c", command]
        if self.own_uid:
            user = [self._tools["setpriv"], f"--reuid={ws.uid}", f"--regid={ws.gid}"]
            user += ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
            user += ["--", "bash", "-c", command]
        # pid 1 is a bash of the host user that runs the command as its child and exits with its
        # status: it keeps bwrap's parent-death signal (a uid change would clear it), reaps
        # orphans, and bwrap returns only once it is gone, i.e. after the kernel killed all else
        # in the pid namespace (bwrap's own init would report the exit status before that).
        init = [self._tools["bash"], "-c", '"$@"; exit $?', "sandbox-init"]
        return [self._tools["prlimit"], *rlimit_args(self.limits), "--", *bwrap, "--", *init, *user]
