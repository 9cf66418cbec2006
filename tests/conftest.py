"""Fixtures shared by the test suite: a backend with its own build cache, a bound on the number
of processes a hostile test may create, and checks that a run leaves nothing behind."""

from __future__ import annotations

import glob
import os
import time

import psutil
import pytest

from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.sandbox.isolation import UID_BASE, UID_COUNT

PIDS_ROOT = "/sys/fs/cgroup/pids"


@pytest.fixture(scope="session")
def backend(tmp_path_factory) -> LocalBackend:
    return LocalBackend(BuildCache(tmp_path_factory.mktemp("build-cache")))


def sandbox_processes() -> list[psutil.Process]:
    """Processes running as one of the engine's sandbox uids (as root), or below this test
    process (as any user)."""
    found = []
    if os.geteuid() == 0:
        for p in psutil.process_iter(["uids"]):
            uids = p.info["uids"]
            if uids and UID_BASE <= uids.real < UID_BASE + UID_COUNT:
                found.append(p)
    found += psutil.Process().children(recursive=True)
    return found


def run_dirs() -> set[str]:
    return set(glob.glob("/tmp/dcodex-run-*"))


def wait_until_clean(before_dirs: set[str], timeout: float = 5.0) -> tuple[list, set]:
    """What a run left behind, after giving concurrent runs (other test processes) time to end:
    a leak persists, a neighbour's run does not."""
    deadline = time.monotonic() + timeout
    while True:
        procs = [p for p in sandbox_processes() if p.is_running()]
        dirs = run_dirs() - before_dirs
        if (not procs and not dirs) or time.monotonic() > deadline:
            return procs, dirs
        time.sleep(0.05)


@pytest.fixture
def no_leftovers():
    """Assert after the test that no process, temp dir or file descriptor of a run survived."""
    before_dirs = run_dirs()
    before_fds = set(os.listdir("/proc/self/fd"))
    yield
    procs, dirs = wait_until_clean(before_dirs)
    assert not procs, f"processes left behind: {[(p.pid, p.name()) for p in procs]}"
    assert not dirs, f"run directories left behind: {dirs}"
    leaked = set(os.listdir("/proc/self/fd")) - before_fds
    leaked = {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not leaked, f"file descriptors leaked: {[os.readlink(f'/proc/self/fd/{fd}') for fd in leaked]}"


@pytest.fixture
def pids_cgroup():
    """Put this test process (and so every process it starts) into a pids cgroup capped at 400
    tasks, so a fork bomb that escaped the sandbox's own limits fails the test instead of filling
    the machine's process table. Skipped, with the reason, where no pids cgroup can be made."""
    if not os.access(PIDS_ROOT, os.W_OK):
        pytest.skip(f"cannot create a pids cgroup ({PIDS_ROOT} not writable): hostile test unbounded")
    path = os.path.join(PIDS_ROOT, f"dcodex-test-{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "pids.max"), "w") as f:
        f.write("400")
    original = _own_pids_cgroup()
    _move_self(path)
    try:
        yield path
    finally:
        _move_self(os.path.join(PIDS_ROOT, original.lstrip("/")))
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _own_pids_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "pids" in controllers.split(","):
                return path
    return "/"


def _move_self(cgroup_dir: str) -> None:
    # Every thread of this process must move (cgroup.procs moves the whole thread group).
    with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
