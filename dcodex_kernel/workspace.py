"""A session's workspace: the files `%%file NAME` writes, which every later run of the session sees.

Copy-on-run: the front door reads the workspace into `Request.files` and the engine copies every
file into the run's own sandbox dir, for the compile step (`#include "util.h"`, `--sources
util.c`) and for the run step (a data file the program opens). What a program changes there goes
with its run; the workspace changes only through `%%file`. One Workspace class serves a kernel
session, an IPython session and a server session (server.py keeps one per client session).

The directory is private (0700, under $XDG_RUNTIME_DIR or the temp dir), made on first write and
removed by `close()` (kernel shutdown, interpreter exit; one whose process was killed outright
is removed by the next Workspace made there). Names are relative paths of plain
components (`cases/1.in`); nothing outside the directory is ever reached: no `..`, no absolute
path, and every component is opened without following a link.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import stat
import tempfile
import threading
from typing import Iterable, Mapping

MAX_FILES = 200  # the sandbox launcher takes at most 256 input files per step
MAX_BYTES = 64 << 20  # the files together; the run's --disk must hold them as well
MAX_NAME = 1024
MAX_DEPTH = 8
SOURCE_EXTENSIONS = (".c", ".cc", ".cpp", ".cxx", ".c++")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class WorkspaceError(ValueError):
    """A bad name, a full workspace, or something there that is not a plain file; str() is a
    message fit to show a person."""


def reserved_names() -> frozenset[str]:
    """The run's own file names (the cell's source, the program, its runtime, the directory of
    a checker's case files): a workspace file may not take them, nor be in that directory."""
    from .languages import CHECK_DIR, LINEBUF_FILE, PROGRAM, RECIPES

    return frozenset({PROGRAM, LINEBUF_FILE, CHECK_DIR, *(r.source_file for r in RECIPES.values())})


def check_name(name) -> str:
    """`name` if it is a valid workspace file name, else WorkspaceError saying why."""
    if not isinstance(name, str) or not name:
        raise WorkspaceError("a workspace file needs a name")
    shown = repr(name)
    if name.startswith("/"):
        raise WorkspaceError(f"{shown}: an absolute path; workspace names are relative (e.g. cases/1.in)")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise WorkspaceError(f"{shown}: control characters are not allowed in a file name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise WorkspaceError(f"{shown[:40]}...: longer than {MAX_NAME} bytes")
    parts = name.split("/")
    if ".." in parts:
        raise WorkspaceError(f"{shown}: '..' would leave the workspace")
    if any(part in ("", ".") for part in parts):
        raise WorkspaceError(f"{shown}: empty or '.' path components are not allowed")
    if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in parts):
        raise WorkspaceError(f"{shown}: a path component is longer than 255 bytes")
    if len(parts) > MAX_DEPTH:
        raise WorkspaceError(f"{shown}: more than {MAX_DEPTH} levels of directories")
    top = parts[0]  # a directory of that name would clash with the file as much as the file
    if top in reserved_names():
        from .languages import CHECK_DIR

        if top == CHECK_DIR:
            raise WorkspaceError(f"{shown}: {CHECK_DIR} is where a --checker is given a case's "
                                 "input, expected and actual output; choose another name")
        what = shown if top == name else f"{shown}: {top!r}"
        raise WorkspaceError(f"{what} is the name of the cell's own program file; choose another")
    return name


def check_files(files: Mapping[str, bytes] | Iterable[tuple[str, bytes]], *,
                max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> tuple[tuple[str, bytes], ...]:
    """The files as a sorted tuple of (name, bytes), checked: names, count, total size, and no
    name that is both a file and a directory (`a` and `a/b`)."""
    items = files.items() if isinstance(files, Mapping) else files
    out = {}
    for name, data in items:
        check_name(name)
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise WorkspaceError(f"{name!r}: contents must be bytes, got {type(data).__name__}")
        if name in out:
            raise WorkspaceError(f"{name!r} is given twice")
        out[name] = bytes(data)
    if len(out) > max_files:
        raise WorkspaceError(f"{len(out)} workspace files is more than the maximum of {max_files}")
    total = sum(map(len, out.values()))
    if total > max_bytes:
        raise WorkspaceError(f"workspace files of {_size(total)} together exceed the quota of "
                             f"{_size(max_bytes)}")
    for name in out:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in out:
                raise WorkspaceError(f"{'/'.join(parts[:i])!r} is a file, so {name!r} cannot be in it")
    return tuple(sorted(out.items()))


def digest(files: Iterable[tuple[str, bytes]]) -> str:
    """A hash of names and contents (order-independent): equal workspaces, equal digests."""
    h = hashlib.sha256()
    for name, data in sorted(files):
        for part in (name.encode("utf-8", "surrogatepass"), data):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def base_dir() -> str:
    """$XDG_RUNTIME_DIR (a per-user tmpfs, gone at logout) where usable, else the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
        return runtime
    return tempfile.gettempdir()


PREFIX = "dcodex-workspace-"


def private_dir(parent: str, prefix: str) -> str:
    """A new 0700 directory `parent/PREFIXPID-xxxx`: the pid tells `remove_orphans` whose it is."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def remove_orphans(parent: str, prefix: str) -> None:
    """Remove the directories `private_dir` made for processes that are gone without cleaning
    up (a kernel killed outright): ours (same uid), not links, their pid no longer running."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(prefix):].split("-", 1)[0] if entry.name.startswith(prefix) else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:  # alive under another uid (EPERM), or the entry went away
            continue


class Workspace:
    """One session's files. Thread-safe; made on first write, removed by close()."""

    def __init__(self, parent: str | None = None, *, max_files: int = MAX_FILES,
                 max_bytes: int = MAX_BYTES, remove_at_exit: bool = True):
        self.parent = parent
        self.max_files, self.max_bytes = max_files, max_bytes
        self._remove_at_exit = remove_at_exit
        self._path: str | None = None
        self._closed = False
        self._lock = threading.RLock()

    @property
    def path(self) -> str | None:
        """The directory, or None while nothing was written (or after close)."""
        return self._path

    def _dir(self) -> str:
        if self._closed:
            raise WorkspaceError("this session's workspace is closed")
        if self._path is None:
            parent = self.parent or base_dir()
            remove_orphans(parent, PREFIX)
            self._path = private_dir(parent, PREFIX)
            if self._remove_at_exit:
                atexit.register(self.close)
        return self._path

    def write(self, name: str, data: bytes, *, append: bool = False) -> int:
        """Write (or append to) file `name`, making its directories; its new size."""
        check_name(name)
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        with self._lock:
            current = dict(self.listing())
            old = current.get(name, 0)
            if name not in current and len(current) >= self.max_files:
                raise WorkspaceError(f"the workspace already holds {len(current)} files, the "
                                     f"maximum of {self.max_files}")
            total = sum(current.values()) - (0 if append else old) + len(data)
            if total > self.max_bytes:
                raise WorkspaceError(f"writing {name!r} would make the workspace {_size(total)}, "
                                     f"over its quota of {_size(self.max_bytes)}")
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in current:
                    raise WorkspaceError(f"{'/'.join(parts[:i])!r} is a file, so {name!r} cannot be in it")
            dirfd = self._open_dir(parts[:-1], create=True)
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                flags |= os.O_APPEND if append else os.O_TRUNC
                try:
                    fd = os.open(parts[-1], flags, 0o600, dir_fd=dirfd)
                except IsADirectoryError:
                    raise WorkspaceError(f"{name!r} is a directory of the workspace") from None
                except OSError as e:
                    raise WorkspaceError(f"{name!r}: {e.strerror} (a link or special file?)") from None
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise WorkspaceError(f"{name!r} is not a regular file")
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    return os.fstat(fd).st_size
                finally:
                    os.close(fd)
            finally:
                os.close(dirfd)

    def _open_dir(self, parts: list[str], *, create: bool) -> int:
        fd = os.open(self._dir(), _DIR_FLAGS)
        for i, part in enumerate(parts):
            try:
                if create:
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                os.close(fd)
                raise WorkspaceError(f"{'/'.join(parts[:i + 1])!r} is not a directory of the "
                                     "workspace (a file or a link is there)") from None
            os.close(fd)
            fd = next_fd
        return fd

    def files(self) -> tuple[tuple[str, bytes], ...]:
        """Every file as sorted (name, contents): what a run gets. WorkspaceError if something
        other than plain files and directories is there (a link someone put in by hand)."""
        return tuple((name, data) for name, data, _ in self._walk(read=True))

    def listing(self) -> list[tuple[str, int]]:
        """(name, size) of every file, sorted by name."""
        return [(name, size) for name, _, size in self._walk(read=False)]

    def _walk(self, *, read: bool):
        with self._lock:
            if self._path is None or self._closed:
                return []
            out = []
            root = os.open(self._path, _DIR_FLAGS)
            try:
                self._walk_dir(root, "", read, out)
            finally:
                os.close(root)
            return sorted(out)

    def _walk_dir(self, dirfd: int, prefix: str, read: bool, out: list) -> None:
        for entry in os.scandir(dirfd):
            name = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                fd = os.open(entry.name, _DIR_FLAGS, dir_fd=dirfd)
                try:
                    self._walk_dir(fd, name + "/", read, out)
                finally:
                    os.close(fd)
                continue
            if not entry.is_file(follow_symlinks=False):
                raise WorkspaceError(f"workspace file {name!r} is a link or a special file; "
                                     "the workspace holds plain files only")
            if not read:
                out.append((name, None, entry.stat(follow_symlinks=False).st_size))
                continue
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            with os.fdopen(fd, "rb") as f:
                data = f.read()
            out.append((name, data, len(data)))

    def replace(self, files: Iterable[tuple[str, bytes]]) -> None:
        """Make the workspace hold exactly `files` (checked against this workspace's quota)."""
        files = check_files(files, max_files=self.max_files, max_bytes=self.max_bytes)
        with self._lock:
            self.clear()
            for name, data in files:
                self.write(name, data)

    def clear(self) -> None:
        with self._lock:
            if self._path is not None:
                for entry in os.scandir(self._path):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)

    def size(self) -> int:
        return sum(size for _, size in self.listing())

    def close(self) -> None:
        """Remove the directory and everything in it (idempotent)."""
        with self._lock:
            self._closed = True
            path, self._path = self._path, None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)  # never follows links (fd-based on Linux)
            if self._remove_at_exit:
                atexit.unregister(self.close)

    def describe(self) -> str:
        """The listing as a person reads it (`%dcodex files`)."""
        files = self.listing()
        if not files:
            return ("The session workspace is empty. Write a file with %%file NAME (kernels) or "
                    "%%dcodex file NAME (IPython); every later run gets a copy.")
        width = max(len(name) for name, _ in files)
        lines = [f"  {name:<{width}}  {_size(size):>10}" for name, size in files]
        total = sum(size for _, size in files)
        return "\n".join([f"Session workspace ({len(files)} file{'s' * (len(files) != 1)}, "
                          f"{_size(total)} of {_size(self.max_bytes)}):", *lines])


def read_files(directory: str, names: Iterable[str]) -> tuple[tuple[str, bytes], ...]:
    """The files `names` of `directory` as workspace files (`dcodex run FILE --file NAME`):
    each checked as a workspace name and opened without following a link. OSError (with the
    path) for one that cannot be read, WorkspaceError for a bad name."""
    out = []
    for name in names:
        parts = check_name(name).split("/")
        fd = os.open(directory, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as e:
            raise OSError(e.errno, f"--file {name}: {e.strerror} (a link is not followed)",
                          os.path.join(directory, name)) from None
        finally:
            os.close(fd)
        with os.fdopen(file_fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise WorkspaceError(f"--file {name}: not a regular file")
            out.append((name, f.read()))
    return check_files(out)


def file_body(cell: str) -> str:
    """A `%%file` cell's text as the file's contents: ended by a newline, as an editor saves a
    file (a cell's last line has none), so appended lines and line-reading programs work."""
    return cell if not cell or cell.endswith("\n") else cell + "\n"


def write_report(name: str, size: int, append: bool) -> str:
    """What `%%file` says it did."""
    return f"{'Appended to' if append else 'Wrote'} {name} ({_size(size)}) in the session workspace\n"


def _size(n: int) -> str:
    from .request import format_size

    return format_size(n)
