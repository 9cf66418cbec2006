"""Helpers the tests share: finding what a run left behind, and bounding hostile tests."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time

import psutil

from dcodex_kernel.sandbox import pool
from dcodex_kernel.sandbox.isolation import UID_BASE, UID_COUNT

PIDS_ROOT = "/sys/fs/cgroup/pids"


def sandbox_processes(since: float = 0.0) -> list[psutil.Process]:
    """Live processes of runs: the sandbox launchers below this test process and everything
    below them, and (as root) any process started after `since` under a sandbox uid — which
    catches a program that outlived an engine killed outright."""
    found = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("dcodex-launch"):
                found[p.pid] = p
                found.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    if os.geteuid() == 0:
        for p in psutil.process_iter(["uids", "create_time"]):
            uids = p.info["uids"]
            if uids and UID_BASE <= uids.real < UID_BASE + UID_COUNT and p.info["create_time"] >= since:
                found[p.pid] = p
    return [p for p in found.values() if alive(p) and not is_prestarted(p)]


def end_prestarted() -> None:
    """End the sandboxes this process's engine made ahead of need (pool.py), waiting until they
    are gone: what is alive afterwards is what runs left."""
    pool.the_pool().close_idle()


def name_of(p: psutil.Process) -> str:
    """p's name, or "" once it has gone: a run's processes end at any moment."""
    try:
        return p.name()
    except psutil.Error:
        return ""


def is_prestarted(p: psutil.Process) -> bool:
    """A process of a sandbox some engine made ahead of need and has not used (pool.py: its
    launcher, its init, and its program process waiting, as the run's uid, for a program): the
    engine's, not a run's."""
    return name_of(p) == "dcodex-ready"


def alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a zombie is dead, only not reaped yet)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> list[psutil.Process]:
    """Live processes below `pid`, less the sandboxes its engine made ahead of need (runs' own
    processes, compilers and launchers of runs are all counted)."""
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if alive(p) and not is_prestarted(p)]
    except psutil.NoSuchProcess:
        return []


def is_sandbox_uid(p: psutil.Process) -> bool:
    try:
        return UID_BASE <= p.uids().real < UID_BASE + UID_COUNT
    except psutil.Error:
        return False


def orphaned_sandbox_processes() -> list[psutil.Process]:
    """Processes running as a sandbox uid that no launcher supervises any more: what a run would
    leave behind, whoever ran it. Runs of other engines on this machine still sit under their
    own `dcodex-launch` and are not counted."""
    orphans = []
    for p in psutil.process_iter():
        try:
            if is_sandbox_uid(p) and alive(p) and not is_prestarted(p) and \
                    not any(a.name().startswith("dcodex-launch") for a in p.parents()):
                orphans.append(p)
        except psutil.Error:
            pass
    return orphans


def wait_until(predicate, timeout: float = 3.0, interval: float = 0.02):
    """predicate()'s first true value within `timeout` seconds, else its last (false) value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def run_dirs() -> set[str]:
    return set(glob.glob("/tmp/dcodex-run-*"))


def wait_until_clean(before_dirs: set[str], since: float = 0.0, timeout: float = 5.0) -> tuple[list, set]:
    """What runs started after `since` left behind, after giving concurrent runs (other test
    processes on this machine) time to end: a leak persists, a neighbour's run does not."""
    clean = wait_until(lambda: not sandbox_processes(since) and not (run_dirs() - before_dirs), timeout)
    return ([], set()) if clean else (sandbox_processes(since), run_dirs() - before_dirs)


class PidsCgroup:
    """A pids cgroup (v1) this test process sits in while it exists, so every process a run starts
    lands in it too — a daemon whatever it reparents to, every fork of a fork bomb. It lists them,
    and its cap stops a fork bomb that escaped the sandbox's own limit before it fills the
    machine's process table (pid_max is 32768 here)."""

    def __init__(self, name: str, cap: int):
        self.path = os.path.join(PIDS_ROOT, f"{name}-{os.getpid()}")
        os.makedirs(self.path, exist_ok=True)
        with open(os.path.join(self.path, "pids.max"), "w") as f:
            f.write(str(cap))
        self.cap = cap
        self._original = os.path.join(PIDS_ROOT, _own_pids_cgroup().lstrip("/"))
        _move_self(self.path)

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and os.access(PIDS_ROOT, os.W_OK)

    def processes(self) -> list[psutil.Process]:
        """Live processes in the cgroup and the groups below it (the engine makes one per run)
        other than this test process."""
        pids = set()
        for top, _dirs, _files in os.walk(self.path):
            try:
                with open(os.path.join(top, "cgroup.procs")) as f:
                    pids |= {int(line) for line in f if line.strip()}
            except FileNotFoundError:  # a run's group removed while we walk
                pass
        pids.discard(os.getpid())
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        return [p for p in procs if alive(p)]

    def leftovers(self) -> list[psutil.Process]:
        """processes() once this process's engine has ended its sandboxes made ahead of need
        (they sit in the cgroup between runs, as the engine's own)."""
        end_prestarted()
        return self.processes()

    def cap_hits(self) -> int:
        """How often a fork failed because of this cgroup's cap (the sandbox's own limit did not hold)."""
        try:
            with open(os.path.join(self.path, "pids.events")) as f:
                return int(f.read().split()[-1])
        except FileNotFoundError:  # kernels without pids.events
            return 0

    def close(self) -> None:
        _move_self(self._original)
        for p in self.processes():  # a leaked run would keep the cgroup busy
            try:
                p.kill()
            except psutil.Error:
                pass
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(self.path)
                return
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
    # cgroup.procs moves the whole thread group.
    with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def ordinary_user(name: str) -> pwd.struct_passwd:
    """An ordinary user to run an engine as (the suite runs as root): `name`, made with useradd
    if missing. Skips, with the reason, where none can be made."""
    import pytest

    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if not shutil.which("useradd"):
        pytest.skip(f"no user {name} and no useradd to create one")
    made = subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
                          capture_output=True, text=True)
    try:
        return pwd.getpwnam(name)  # made, or made meanwhile by another test run
    except KeyError:
        pytest.fail(f"useradd {name} failed: {made.stderr}")


def ipython_shell():
    """IPython's one test shell (globalipapp), for every test module alike. Its `get_ipython`
    imported by name returns the shell only to the first caller (later ones get None), so go
    through the module: start it (once per process), then ask the module's replaced function."""
    from IPython.testing import globalipapp

    globalipapp.start_ipython()
    return globalipapp.get_ipython()


def run_as_ordinary_user(script: str, *args: str, input: str = "", timeout: float = 180) -> str:
    """Run `script` with the system Python as an ordinary user (made if missing), on a copy of
    the package it can read, with a home of its own: `sys.argv[1]` is the copy's top dir, then
    `args`. Returns its stdout; fails with its stderr if it fails; skips where that Python has no
    psutil (Debian's python3-psutil)."""
    import shutil
    import tempfile

    import pytest

    user = ordinary_user("dcodex-hostile")
    top = tempfile.mkdtemp(prefix="dcodex-as-user-")
    try:
        shutil.copytree(os.path.join(os.path.dirname(os.path.dirname(__file__)), "dcodex_kernel"),
                        os.path.join(top, "dcodex_kernel"), ignore=shutil.ignore_patterns("__pycache__"))
        for dirpath, _, files in os.walk(top):
            os.chmod(dirpath, 0o755)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o644)
        home = os.path.join(top, "home")
        os.makedirs(home)
        os.chown(home, user.pw_uid, user.pw_gid)
        proc = subprocess.run(["/usr/bin/python3", "-c", script, top, *args], input=input,
                              capture_output=True, text=True, timeout=timeout, cwd="/",
                              env={"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                              user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        if proc.returncode and "No module named 'psutil'" in proc.stderr:
            pytest.skip("the ordinary user's /usr/bin/python3 has no psutil")
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout
    finally:
        shutil.rmtree(top, ignore_errors=True)
