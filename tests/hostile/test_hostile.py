"""The hostile suite: every case of cases.py, run by a real engine in both engine modes.

- root: the engine runs as root (the server case), in a runner process with its own HOME;
- user: the engine runs as an ordinary user (the usual Jupyter case). When the suite runs as
  root it creates that user (`useradd`) and starts the runner as it with the system Python (root's
  venv is out of its reach); when the suite itself runs as an ordinary user, that is this mode.

Secrets are planted in the engine user's home (an ssh key, a Jupyter kernel connection file,
.bashrc), a unix socket listens in the host's /tmp and a TCP socket on 127.0.0.1; the runner
runs inside a pids cgroup (as root) that bounds it should the sandbox's own limits fail. For each
case: its status, the text it must and must not print, its wall time within the limit + 1 s, no
fd leaked; afterwards nothing of any run is left and the host is unharmed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import psutil
import pytest

from dcodex_kernel.options import parse_header, request_from
from dcodex_kernel.pch import HEADERS as PCH_HEADERS
from dcodex_kernel.request import Language, Limits

from ..support import PidsCgroup, alive, is_sandbox_uid, ordinary_user, wait_until
from ..test_examples import ALL as EXAMPLES
from .cases import MARKER, Case, cases

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "runner.py")
USER = "dcodex-hostile"
SYSTEM_PYTHON = "/usr/bin/python3"


def example_cases() -> list[Case]:
    """Everything in examples/, with the status and text its header records (tests/test_examples.py
    runs them in this test process's own mode; here they run in both)."""
    return [Case(f"example:{e.name}", e.language.value, e.path.read_text(encoding="utf-8"),
                 e.options, expect=e.expect.value, want=tuple(e.stdout), message=tuple(e.message))
            for e in EXAMPLES]


CASE_NAMES = [c.name for c in cases({"home": "/h", "cache": "/c", "ssh_key": "/k", "runtime_file": "/r",
                                     "launcher": "/l", "unix_socket": "/s", "tcp_port": 1})]
CASE_NAMES += [c.name for c in example_cases()]


@dataclass
class EngineRun:
    mode: str
    home: str
    uid: int
    facts: dict
    engine: dict
    results: dict
    snapshot_before: dict
    snapshot_after: dict
    tmp_mode: tuple
    left: list = field(default_factory=list)
    unix_clients: list = field(default_factory=list)
    tcp_clients: list = field(default_factory=list)


class Listener:
    """A socket that records who connected (nobody must)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.clients: list = []
        sock.listen()
        sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
                self.clients.append(addr)
                conn.close()
            except (socket.timeout, OSError):
                pass

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _readable_copy() -> str:
    """The package and the runner, copied where any user can read them."""
    top = tempfile.mkdtemp(prefix="dcodex-hostile-code-")
    os.chmod(top, 0o755)
    checkout = os.path.dirname(os.path.dirname(HERE))
    shutil.copytree(os.path.join(checkout, "dcodex_kernel"), os.path.join(top, "dcodex_kernel"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.makedirs(os.path.join(top, "tests", "hostile"))
    for name in ("runner.py", "cases.py"):
        shutil.copy(os.path.join(HERE, name), os.path.join(top, "tests", "hostile", name))
    for dirpath, dirs, files in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return top


def _plant(home: str, uid: int, gid: int) -> dict:
    """The engine user's secrets, as a real home holds them."""
    files = {
        ".ssh/id_rsa": 0o600,
        ".local/share/jupyter/runtime/kernel-hostile-test.json": 0o600,
        ".bashrc": 0o644,
    }
    for rel, mode in files.items():
        path = os.path.join(home, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(f"{MARKER} {rel}\n")
        os.chmod(path, mode)
    for top, dirs, names in os.walk(home):
        for name in dirs + names:
            os.lchown(os.path.join(top, name), uid, gid)
    os.chown(home, uid, gid)
    return {"ssh_key": os.path.join(home, ".ssh/id_rsa"),
            "runtime_file": os.path.join(home, ".local/share/jupyter/runtime/kernel-hostile-test.json")}


def _snapshot(home: str) -> dict:
    """Every file under the home (the build cache and launcher included): its hash or link."""
    snap = {}
    for top, dirs, names in os.walk(home):
        for name in names:
            path = os.path.join(top, name)
            if os.path.islink(path):
                snap[path] = "link:" + os.readlink(path)
            elif "/.cache/dcodex/builds/" in path:
                snap[path] = "cache entry"  # entries come and go; what matters is their owner below
            elif "/.cache/dcodex/pch/" in path:
                st = os.stat(path)  # ~150 MB: its identity, not its hash
                snap[path] = f"pch {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_uid}"
            else:
                with open(path, "rb") as f:
                    snap[path] = hashlib.sha256(f.read()).hexdigest()
    return snap


def _run_engine(argv: list[str], env: dict, cases_json: list, cgroup: PidsCgroup | None,
                as_user: dict, precompile: bool = False) -> list[dict]:
    if cgroup is not None:  # start inside the bounding cgroup, before any run exists
        os.chmod(os.path.join(cgroup.path, "cgroup.procs"), 0o666)  # the user moves itself in
        argv = ["/bin/sh", "-c", f'echo $$ > {cgroup.path}/cgroup.procs && exec "$@"', "sh", *argv]
    spec = {"cases": cases_json, "precompile": precompile}
    proc = subprocess.run(argv, input=json.dumps(spec), capture_output=True,
                          text=True, env=env, timeout=600, cwd="/", **as_user)
    if proc.returncode != 0:
        pytest.fail(f"the engine runner failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module", params=["root", "user"])
def engine_run(request, tmp_path_factory) -> EngineRun:
    mode = request.param
    am_root = os.geteuid() == 0
    if mode == "root" and not am_root:
        pytest.skip("the suite runs as an ordinary user: only the ordinary-user mode can run here")
    if mode == "user" and am_root:
        user = ordinary_user(USER)
        home, uid, gid = user.pw_dir, user.pw_uid, user.pw_gid
        shutil.rmtree(home, ignore_errors=True)
        os.makedirs(home, mode=0o750)
        as_user = {"user": uid, "group": gid, "extra_groups": []}
        code = _readable_copy()  # the checkout may sit where the user cannot read (e.g. /root)
        request.addfinalizer(lambda: shutil.rmtree(code, ignore_errors=True))
        probe = subprocess.run([SYSTEM_PYTHON, "-c",
                                "import psutil, sys; sys.path.insert(0, sys.argv[1]); import dcodex_kernel",
                                code], capture_output=True, text=True, cwd="/", **as_user)
        if probe.returncode != 0:
            pytest.skip(f"the ordinary user cannot run the engine with {SYSTEM_PYTHON} "
                        f"(needs Debian's python3-psutil): {probe.stderr.strip()[-300:]}")
        argv = [SYSTEM_PYTHON, os.path.join(code, "tests", "hostile", "runner.py")]
    else:
        home = str(tmp_path_factory.mktemp(f"hostile-home-{mode}"))
        uid, gid = os.getuid(), os.getgid()
        argv = [sys.executable, RUNNER]
        as_user = {}
    os.chmod(home, 0o700)
    env = {"HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "DCODEX_HOSTILE_MARKER": MARKER}  # visible in the runner's /proc/PID/environ
    facts = {"home": home, "cache": os.path.join(home, ".cache", "dcodex"), **_plant(home, uid, gid)}

    # Builds the launcher (tells its path) and the precompiled headers, which the cases then use.
    engine = _run_engine(argv, env, [], None, as_user, precompile=True)[0]["engine"]
    facts["launcher"] = engine["launcher"]
    facts["precompiled"] = engine["precompiled"]

    sock_path = f"/tmp/dcodex-hostile-{os.getpid()}-{mode}.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(sock_path)
    os.chmod(sock_path, 0o777)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    facts.update(unix_socket=sock_path, tcp_port=tcp.getsockname()[1])
    unix_l, tcp_l = Listener(unix), Listener(tcp)

    all_cases = cases(facts) + example_cases()
    tmp_mode = (os.stat("/tmp").st_mode, os.stat("/").st_mode)
    before = _snapshot(home)
    cgroup = PidsCgroup(f"dcodex-hostile-{mode}", 400) if PidsCgroup.available() else None
    since = time.time()
    try:
        lines = _run_engine(argv, env, [
            {"name": c.name, "language": c.language, "code": c.code, "options": c.options}
            for c in all_cases], cgroup, as_user)
        # What is still alive of the runs: everything left in the bounding cgroup (only this
        # engine's runs are in it), else processes of the sandbox uids / the user since the start.
        def leftovers():
            if cgroup is not None:
                return [(p.pid, p.name()) for p in cgroup.processes() if alive(p)]
            return _leftovers(uid if mode == "user" else None, since)
        left = [] if wait_until(lambda: not leftovers(), timeout=5) else leftovers()
    finally:
        if cgroup is not None:
            cgroup.close()
        unix_l.close()
        tcp_l.close()
        os.unlink(sock_path)
    run = EngineRun(mode, home, uid, facts, lines[0]["engine"], {r["name"]: r for r in lines[1:]},
                    before, _snapshot(home), tmp_mode, left, unix_l.clients, tcp_l.clients)
    run.cases = {c.name: c for c in all_cases}
    return run


def _leftovers(user_uid: int | None, since: float) -> list:
    """Processes of runs still alive: sandbox uids (root mode) or the ordinary user's."""
    found = []
    for p in psutil.process_iter(["uids", "create_time", "name"]):
        uids = p.info["uids"]
        if not uids or p.info["create_time"] < since - 1:
            continue
        if (user_uid is not None and uids.real == user_uid) or is_sandbox_uid(p):
            found.append((p.pid, p.info["name"]))
    return found


def _accounting(result: dict) -> str:
    return "cgroup" if any(layer.startswith("cgroup-") for layer in result.get("isolation", [])) else "sampling"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case(engine_run: EngineRun, name: str):
    case = engine_run.cases[name]
    result = engine_run.results.get(name)
    assert result is not None, f"{name}: the runner gave no result (it died on an earlier case?)"
    where = (f"[{engine_run.mode}] {name}: {result['status']} ({result['message']!r})\n"
             f"stdout: {result['stdout'][-1500:]!r}\nstderr: {result['stderr'][-1500:]!r}")
    expect = case.expect if isinstance(case.expect, str) else case.expect[_accounting(result)]
    assert result["status"] == expect, where
    for text in case.want:
        assert text in result["stdout"], where
    for text in case.message:
        assert text in result["message"], where
    for text in case.forbid:
        assert text not in result["stdout"] + result["stderr"], where
    limits = request_from(parse_header(case.options), code="", language=Language.parse(case.language),
                          base=Limits()).limits
    assert result["wall_s"] <= limits.wall_s + 1, where
    if case.max_wall is not None:
        assert result["wall_s"] <= case.max_wall, where
    assert not result["leaked_fds"], where
    if case.check:
        CHECKS[case.check](engine_run, result, where)


def _home_unchanged(run: EngineRun, result: dict, where: str) -> None:
    changed = {p for p in run.snapshot_before if run.snapshot_after.get(p) != run.snapshot_before[p]}
    new = {p for p in run.snapshot_after if p not in run.snapshot_before and "/.cache/dcodex/" not in p}
    assert not changed and not new, f"{where}\nchanged: {changed}\nnew: {new}"


def _cache_unchanged(run: EngineRun, result: dict, where: str) -> None:
    cache = run.facts["cache"]
    for path, digest in run.snapshot_before.items():
        if path.startswith(cache):
            assert run.snapshot_after.get(path) == digest, f"{where}\n{path} changed"
    for path in run.snapshot_after:
        assert "evil" not in os.path.basename(path), f"{where}\n{path} appeared"


def _tmp_unharmed(run: EngineRun, result: dict, where: str) -> None:
    assert (os.stat("/tmp").st_mode, os.stat("/").st_mode) == run.tmp_mode, where
    assert stat.S_IMODE(os.stat("/tmp").st_mode) == 0o1777, where


def _few_processes(run: EngineRun, result: dict, where: str) -> None:
    visible = int(result["stdout"].split("processes visible:")[1].split()[0])
    assert visible <= 3, f"{where}\nthe run saw {visible} processes: not its own pid namespace's /proc"


def _no_unix_client(run: EngineRun, result: dict, where: str) -> None:
    assert not run.unix_clients, where


def _no_tcp_client(run: EngineRun, result: dict, where: str) -> None:
    assert not run.tcp_clients, where


def _syscalls_denied(run: EngineRun, result: dict, where: str) -> None:
    if "seccomp" not in result["isolation"]:
        pytest.fail(f"{where}\nno seccomp layer: these calls are not filtered on this machine")
    for call in ("add_key", "keyctl", "ptrace", "bpf", "io_uring_setup", "unshare_user", "mount", "tiocsti",
                 "inet_socket", "netlink_socket"):
        assert f"{call} denied" in result["stdout"], where


def _disk_bounded(run: EngineRun, result: dict, where: str) -> None:
    written = int(result["stdout"].split("MiB written")[1].split()[0])
    assert written <= 16, f"{where}\n{written} MiB written under a 16 MiB disk limit"


def _inodes_bounded(run: EngineRun, result: dict, where: str) -> None:
    files = int(result["stdout"].split("files")[1].split()[0])
    assert files < 5000, where


def _spread_peak(run: EngineRun, result: dict, where: str) -> None:
    if _accounting(result) == "cgroup":
        assert "Memory limit of 256 MiB" in result["message"], where
    else:  # no cgroup: each process is under its own limit; the peak is the run's sum
        assert result["peak_memory"] >= 8 * 36 << 20, f"{where}\npeak {result['peak_memory']}"


CHECKS = {f.__name__.lstrip("_"): f for f in (
    _home_unchanged, _cache_unchanged, _tmp_unharmed, _few_processes, _no_unix_client,
    _no_tcp_client, _syscalls_denied, _disk_bounded, _inodes_bounded, _spread_peak)}


def test_engine_mode_and_layers(engine_run: EngineRun):
    """The engine really ran in the mode this module says, with every confinement layer this
    machine kind has (a missing one would be reported as degraded, and this would fail)."""
    assert (engine_run.engine["uid"] == 0) == (engine_run.mode == "root")
    for layer in ("pid-namespace", "no-network", "filesystem", "seccomp", "no-new-privs"):
        assert layer in engine_run.engine["isolation"], engine_run.engine
    # The C++ headers were precompiled in the sandbox as this engine's user (for the cases).
    assert engine_run.facts["precompiled"] == list(PCH_HEADERS), engine_run.facts


def test_cases_ran_in_prestarted_sandboxes(engine_run: EngineRun):
    """The suite holds against sandboxes made ahead of need too (pool.py): most cases' runs
    started in one (a case's first run of a kind, and compiles with precompiled headers, make
    their own)."""
    assert engine_run.engine["prestart"], engine_run.engine
    results = engine_run.results.values()
    used = [r["name"] for r in results if r.get("prestarted", 0) > 0]
    assert len(used) >= 0.6 * len(results), f"only {len(used)} of {len(results)} cases: {used}"


def test_nothing_left_and_host_unharmed(engine_run: EngineRun):
    assert not engine_run.left, f"processes of runs left: {engine_run.left}"
    assert not [d for d in os.listdir("/tmp") if d.startswith("dcodex-run-")
                and os.stat(os.path.join("/tmp", d)).st_uid == engine_run.uid], "run dirs left in /tmp"
    _home_unchanged(engine_run, {}, "home")
    _tmp_unharmed(engine_run, {}, "tmp")
    builds = os.path.join(engine_run.facts["cache"], "builds")
    for top, dirs, names in os.walk(builds):
        for name in names:
            st = os.lstat(os.path.join(top, name))
            assert stat.S_ISREG(st.st_mode) and st.st_uid == engine_run.uid, os.path.join(top, name)
            with open(os.path.join(top, name), "rb") as f:
                assert MARKER.encode() not in f.read(), f"a secret reached the build cache: {name}"
