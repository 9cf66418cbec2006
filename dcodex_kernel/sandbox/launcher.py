"""Build (once per source version) and locate the small C launcher in `launcher.c`."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ..paths import cache_dir

SOURCE = Path(__file__).with_name("launcher.c")
_lock = threading.Lock()
_path: str | None = None


class LauncherUnavailable(RuntimeError):
    pass


def launcher_command(flags, uid: int | None, gid: int | None, group) -> list[str]:
    """The start of every launcher's command line: its layers' `flags`, the engine it dies with,
    the run's uid (as root) and the cgroup it joins."""
    # -P: the run dies with this process. PDEATHSIG follows the spawning *thread*, which is
    # fine: a run's launcher is started by the thread that waits for the run, a cgroup slot's
    # spawner or the pool's thread, all of which live as long as what they started.
    # argv[0] is a bare name: the run can read its init's command line (/proc/1/cmdline), and
    # the launcher's path would tell it where the engine user's cache and home are.
    cmd = ["dcodex-launch", *flags, "-P", str(os.getpid())]
    if uid is not None:
        cmd += ["-u", str(uid), "-g", str(gid)]
    for path in group.paths() if group is not None else ():
        cmd += ["-C", path]
    return cmd


def start_launcher(cmd: list[str], group, **popen) -> subprocess.Popen:
    """Start `cmd` (launcher_command + its own words), born in `group` where it has a spawner."""
    def start():
        if _run_cpus is None:
            return subprocess.Popen(cmd, executable=launcher_path(), start_new_session=True, **popen)
        # The engine's threads are pinned (pin_engine_threads); a child gets the CPUs of the
        # thread that starts it, and a run gets all of the process's.
        pinned = os.sched_getaffinity(0)
        os.sched_setaffinity(0, _run_cpus)
        try:
            return subprocess.Popen(cmd, executable=launcher_path(), start_new_session=True, **popen)
        finally:
            os.sched_setaffinity(0, pinned)
    return group.spawn(start) if group is not None else start()


_run_cpus: set[int] | None = None  # a run's CPUs once the engine's own threads are pinned


def pin_engine_threads(cpu: int) -> None:
    """Keep this thread, and the threads started from it after this, on CPU `cpu`; the runs
    started after this keep every CPU the process had. For a process whose threads are the
    engine's (`dcodex serve --pin-cpu`): its Python runs on one core at a time anyway (the
    GIL), and its threads hand each run to each other a few dozen times, which costs far less
    within one core than across two on a VM. OSError if the process may not use `cpu`."""
    global _run_cpus
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    _run_cpus = allowed


def launcher_path() -> str:
    """Path of the compiled launcher, building it on first use with the system C compiler."""
    global _path
    # Checked each time (one stat): another engine version may have removed this build.
    if _path and os.path.exists(_path):
        return _path
    with _lock:
        if _path and os.path.exists(_path):
            return _path
        source = SOURCE.read_bytes()
        # A build depends on the source, how it is built, and whether libseccomp's headers were
        # there (installing them later gives a new build with the filter).
        recipe = repr((_VARIANTS, any(os.path.exists(h) for h in SECCOMP_HEADERS))).encode()
        digest = hashlib.sha256(source + recipe).hexdigest()[:16]
        target = cache_dir() / "launcher" / f"dcodex-launch-{digest}"
        if not os.access(target, os.X_OK):
            _build(source, target)
        _path = str(target)
        return _path


def _remove_stale_builds(keep: Path) -> None:
    """Drop launchers of other source versions unused for a week (a long-running kernel of an
    older version still uses its own, and would rebuild it if it vanished)."""
    week_ago = time.time() - 7 * 86400
    for old in keep.parent.glob("dcodex-launch-*"):
        try:
            if old != keep and old.stat().st_atime < week_ago and old.stat().st_mtime < week_ago:
                old.unlink()
        except FileNotFoundError:
            pass


@functools.lru_cache(maxsize=1)
def launcher_features() -> frozenset[str]:
    """What the launcher was built with ("seccomp" when libseccomp was there)."""
    try:
        out = subprocess.run([launcher_path(), "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired, LauncherUnavailable):
        return frozenset()
    return frozenset(out.stdout.split())


# Tried in order: static when libc.a is there (it starts ~0.3 ms faster on every run), with
# Debian's libseccomp (libseccomp-dev) when its headers are there; without it the seccomp layer
# is reported missing.
SECCOMP_HEADERS = ("/usr/include/seccomp.h", "/usr/local/include/seccomp.h")
_VARIANTS = (
    ["-static", "-DDCODEX_SECCOMP", "@", "-lseccomp"],
    ["-DDCODEX_SECCOMP", "@", "-lseccomp"],
    ["-static", "@"],
    ["@"],
)


def _build(source: bytes, target: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise LauncherUnavailable("the sandbox launcher needs a C compiler (cc/gcc) on PATH")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = os.path.join(tmp, "launcher.c")
        out = os.path.join(tmp, "dcodex-launch")
        with open(src, "wb") as f:
            f.write(source)
        errors = ""
        for variant in _VARIANTS:
            argv = [compiler, "-O2", "-o", out, *(src if a == "@" else a for a in variant)]
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode == 0:
                if "-lseccomp" in variant:
                    _embed_filter(compiler, variant, src, out, tmp)
                os.chmod(out, 0o755)
                os.replace(out, target)  # atomic: concurrent builders race harmlessly
                _remove_stale_builds(target)
                return
            errors = proc.stderr
        raise LauncherUnavailable(f"could not build the sandbox launcher:\n{errors}")


def _embed_filter(compiler: str, variant: list[str], src: str, out: str, tmp: str) -> None:
    """Replace the libseccomp build `out` by one with its filter compiled in: the first build
    writes the filter as BPF (-X), the second includes it and needs no libseccomp, so a run
    no longer builds the filter (~1 ms). If any step fails, `out` stays the libseccomp build."""
    exported = subprocess.run([out, "-X"], capture_output=True, timeout=30)
    if exported.returncode != 0 or not exported.stdout or len(exported.stdout) % 8:
        return
    header = os.path.join(tmp, "filter.h")
    with open(header, "w") as f:  # struct sock_filter {u16 code; u8 jt, jf; u32 k;}
        for code, jt, jf, k in struct.iter_unpack("=HBBI", exported.stdout):
            f.write(f"{{{code:#x}, {jt}, {jf}, {k:#x}}},\n")
    embedded = os.path.join(tmp, "dcodex-launch-embedded")
    flags = [a for a in variant if a not in ("@", "-lseccomp")]
    argv = [compiler, "-O2", "-o", embedded, *flags, f'-DDCODEX_SECCOMP_BPF="{header}"', src]
    if subprocess.run(argv, capture_output=True).returncode == 0:
        os.replace(embedded, out)
