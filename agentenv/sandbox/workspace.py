"""A sandbox's workspace on the host: a folder under a sandbox root, and the host's file operations on it.

Layout: ``ROOT/sb-KEY/owner`` (``"PID STARTTIME"`` of the process that made it) and
``ROOT/sb-KEY/ws`` (the workspace). When the host runs as root, KEY is a uid of its own
(:data:`UID_BASE` + a free slot, claimed by creating the folder) and ``ws`` is a tmpfs of
``Limits.disk`` bytes owned by that uid, mode 0700; otherwise ``ws`` is a plain folder of the
current user. :func:`remove_orphans` removes (and unmounts) the folders of processes that died.

Host-side paths are checked to stay inside ``ws``: symlinks are resolved before the check,
files are opened with ``O_NOFOLLOW`` and must be regular files, copies out keep symlinks as links.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from agentenv.sandbox.base import SandboxError, SandboxPathError

UID_BASE = 0x7000_0000
"""First host uid of root-mode sandboxes (above the ranges subuid and systemd allocate)."""

UID_SLOTS = 1 << 16
"""How many sandbox uids there are (at most that many root-mode sandboxes at once per host)."""

STALE_SECONDS = 60.0
"""A sandbox folder without an owner file is an orphan once it is this old (a crash mid-claim)."""

_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 2, 4, 2
_libc = ctypes.CDLL(None, use_errno=True)


def default_root() -> Path:
    """``$AGENTENV_SANDBOX_ROOT``, else ``agentenv-sandbox-UID`` in the host's temp folder."""
    env = os.environ.get("AGENTENV_SANDBOX_ROOT")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"agentenv-sandbox-{os.getuid()}"


def prepare_root(root: Path) -> Path:
    """Create ``root`` (mode 0700) or check that the existing one is our own real folder."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise SandboxError(f"sandbox root {root} is not a folder owned by uid {os.geteuid()}")
    return root.resolve()


class Workspace:
    """One claimed sandbox folder; ``path`` is the workspace, ``uid``/``gid`` its owner."""

    def __init__(self, entry: Path, uid: int, gid: int, mounted: bool) -> None:
        self.entry = entry
        self.path = entry / "ws"
        self.uid = uid
        self.gid = gid
        self.mounted = mounted

    @classmethod
    def claim(cls, root: Path, *, own_uid: bool, disk: int | None) -> Workspace:
        """A new workspace under ``root``. ``own_uid`` (needs root): a fresh uid and a tmpfs of
        ``disk`` bytes; otherwise a plain folder of the current user."""
        if own_uid and os.geteuid() != 0:
            raise SandboxError("a sandbox uid of its own needs the host to run as root")
        entry, uid = _claim_entry(prepare_root(root), own_uid)
        gid = uid if own_uid else os.getegid()
        try:
            (entry / "owner").write_text(_owner_stamp(os.getpid()))
            path = entry / "ws"
            path.mkdir(mode=0o700)
            if own_uid:
                _mount_tmpfs(path, disk, uid, gid)
        except BaseException:
            _remove_entry(entry)
            raise
        return cls(entry, uid, gid, own_uid)

    def destroy(self) -> None:
        """Unmount and remove the workspace folder."""
        _remove_entry(self.entry)

    # -- paths ---------------------------------------------------------------------------------
    def resolve(self, rel: PurePosixPath) -> Path:
        """The host path of ``rel``, symlinks resolved; it must stay inside the workspace."""
        full = (self.path / rel).resolve()
        if full != self.path and not full.is_relative_to(self.path):
            raise SandboxPathError(f"{str(rel)!r} leads outside the workspace (to {full})")
        return full

    def _parent(self, rel: PurePosixPath) -> Path:
        """The resolved folder that will hold ``rel``, created (and owned by the uid) if needed."""
        parent = self.resolve(rel.parent)
        missing = [p for p in (parent, *parent.parents) if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            self._own(folder)
        parent = self.resolve(rel.parent)  # made of real folders now: resolve again, to be sure
        if not parent.is_dir():
            raise SandboxPathError(f"{str(rel.parent)!r} is not a folder")
        return parent

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0 and self.uid != 0:
            os.lchown(path, self.uid, self.gid)

    # -- file operations -----------------------------------------------------------------------
    def write(self, rel: PurePosixPath, data: bytes) -> None:
        """Write ``data`` to ``rel`` (replacing a regular file, never following a symlink)."""
        with self._create(self._parent(rel) / rel.name) as f:
            f.write(data)

    def read(self, rel: PurePosixPath) -> bytes:
        """The bytes of the regular file ``rel`` (FIFOs, devices and sockets are refused)."""
        target = self.resolve(rel)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(target, flags)
        except FileNotFoundError:
            raise FileNotFoundError(f"no file {str(rel)!r} in the sandbox") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SandboxPathError(f"{str(rel)!r} is not a regular file")
            return f.read()

    def copy_in(self, source: Path, rel: PurePosixPath) -> None:
        """Copy the host file or folder ``source`` to ``rel``; a folder is merged into ``rel``
        (``"."``: the workspace), its symlinks copied as links."""
        if not source.is_dir():
            if rel == PurePosixPath("."):
                raise SandboxPathError(
                    f"copy the file {source} to a path in the workspace, not '.'"
                )
            with self._create(self._parent(rel) / rel.name) as f, source.open("rb") as src:
                shutil.copyfileobj(src, f)
            return
        target = self.resolve(rel) if rel == PurePosixPath(".") else self._parent(rel) / rel.name
        for folder, dirs, files in os.walk(source):
            here = self._real_folder(target / Path(folder).relative_to(source))
            for name in (*dirs, *files):
                self._copy_entry(Path(folder, name), here / name)

    def copy_out(self, rel: PurePosixPath, dest: Path) -> None:
        """Copy ``rel`` (file or folder; symlinks stay links) to the host path ``dest``."""
        source = self.resolve(rel)
        mode = source.lstat().st_mode
        try:
            if stat.S_ISDIR(mode):
                shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
            elif stat.S_ISREG(mode):
                shutil.copyfile(source, dest, follow_symlinks=False)
            else:
                raise SandboxPathError(f"{str(rel)!r} is not a regular file or folder")
        except shutil.Error as exc:
            raise SandboxError(f"could not copy {str(rel)!r} out: {exc}") from exc

    def _create(self, target: Path) -> BinaryIO:
        """``target`` opened for writing: created or truncated, never through a symlink."""
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise SandboxPathError(f"{target} exists and is not a regular file")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        f = os.fdopen(os.open(target, flags, 0o644), "wb")
        if os.geteuid() == 0 and self.uid != 0:
            os.fchown(f.fileno(), self.uid, self.gid)
        return f

    def _real_folder(self, folder: Path) -> Path:
        """``folder`` as a real folder (made if missing); a symlink or a file there is refused."""
        if not folder.is_symlink() and not folder.exists():
            folder.mkdir()
            self._own(folder)
        if folder.is_symlink() or not folder.is_dir():
            raise SandboxPathError(f"{folder} is not a folder")
        return folder

    def _copy_entry(self, source: Path, target: Path) -> None:
        """Copy one entry of a folder being copied in (folders are made by the walk)."""
        if source.is_symlink():
            if target.is_symlink() or target.is_file():
                target.unlink()
            os.symlink(os.readlink(source), target)
            self._own(target)
        elif source.is_file():
            with self._create(target) as f, source.open("rb") as src:
                shutil.copyfileobj(src, f)


# -- claiming, mounting, removing ------------------------------------------------------------
def _claim_entry(root: Path, own_uid: bool) -> tuple[Path, int]:
    for _ in range(100):
        uid = UID_BASE + secrets.randbelow(UID_SLOTS) if own_uid else os.geteuid()
        key = str(uid) if own_uid else secrets.token_hex(8)
        entry = root / f"sb-{key}"
        try:
            entry.mkdir(mode=0o711)
        except FileExistsError:
            continue
        return entry, uid
    raise SandboxError(f"no free sandbox slot under {root} after 100 tries")


def _mount_tmpfs(path: Path, size: int | None, uid: int, gid: int) -> None:
    options = f"mode=0700,uid={uid},gid={gid}"
    if size is not None:
        options += f",size={size},nr_inodes={max(1024, size // 4096)}"
    flags = _MS_NOSUID | _MS_NODEV
    if _libc.mount(b"agentenv-sandbox", os.fsencode(path), b"tmpfs", flags, options.encode()):
        err = ctypes.get_errno()
        raise SandboxError(f"mount tmpfs on {path}: {os.strerror(err)}")


def _remove_entry(entry: Path) -> None:
    workspace = entry / "ws"
    if workspace.is_mount() and _libc.umount2(os.fsencode(workspace), _MNT_DETACH):
        err = ctypes.get_errno()
        raise SandboxError(f"umount {workspace}: {os.strerror(err)}")
    shutil.rmtree(entry, ignore_errors=True)


def _owner_stamp(pid: int) -> str:
    return f"{pid} {_start_time(pid)}\n"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat_line.rpartition(")")[2].split()[19]


def _orphaned(entry: Path) -> bool:
    try:
        stamp = (entry / "owner").read_text()
    except FileNotFoundError:
        with contextlib.suppress(FileNotFoundError):
            return time.time() - entry.stat().st_mtime > STALE_SECONDS
        return False
    pid, _, started = stamp.strip().partition(" ")
    return not pid.isdigit() or _start_time(int(pid)) != started


def remove_orphans(root: Path | None = None) -> list[Path]:
    """Remove the sandbox folders under ``root`` whose creating process no longer runs
    (unmounting their tmpfs); return them. Sandboxes start it once per process and root."""
    root = default_root() if root is None else root
    removed = []
    for entry in root.glob("sb-*"):
        if _orphaned(entry):
            with contextlib.suppress(SandboxError):
                _remove_entry(entry)
                removed.append(entry)
    return removed
