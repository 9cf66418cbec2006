"""Pre-started sandboxes (sandbox/pool.py): a run in one behaves exactly as in a sandbox made for
it, gets nothing of an earlier run, and the pool itself leaves nothing behind — when it is
emptied, when a ready sandbox dies under it, and when its engine is killed outright.

The rest of the suite runs through the pool too (the engine uses it wherever the filesystem is
confined), and the hostile suite checks that most of its cases started in a pre-started sandbox,
in both engine modes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace

import psutil
import pytest

from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.events import collect
from dcodex_kernel.request import Language, Limits, Request
from dcodex_kernel.sandbox import isolation, pool

from .support import alive, is_prestarted, is_sandbox_uid, wait_until

pytestmark = pytest.mark.usefixtures("no_leftovers")

CAPS = isolation.detect()
needs_prestart = pytest.mark.skipif(
    not CAPS.prestart, reason=f"no confined filesystem here ({', '.join(CAPS.missing())}): runs make their own sandbox")

# Programs whose every observable must be the same in a ready sandbox and a fresh one.
PROGRAMS = {
    "hello": (Language.C, '#include <stdio.h>\nint main(void){puts("hello");return 0;}', ""),
    "stdin": (Language.CPP, "#include <iostream>\nint main(){std::string s; while (std::cin >> s) "
                            "std::cout << s.size() << ' '; return 3;}", "a bb ccc"),
    "signal": (Language.C, "#include <signal.h>\nint main(void){raise(SIGSEGV);}", ""),
    "env-and-place": (Language.PYTHON, "import os, socket\nprint(sorted(os.environ), os.getcwd(), "
                                       "socket.gethostname(), os.listdir('/box'))", ""),
    "limits": (Language.PYTHON, "import resource\nprint([resource.getrlimit(r) for r in "
                                "(resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE, resource.RLIMIT_CORE)])", ""),
    "disk": (Language.PYTHON, "import os\ns = os.statvfs('/box')\nprint(s.f_blocks * s.f_frsize)", ""),
    "memory": (Language.C, "#include <stdlib.h>\n#include <string.h>\nint main(void){for(;;){char *p = "
                           "malloc(1<<20); if(!p) return 1; memset(p, 1, 1<<20);}}", ""),
}


def _run(backend, lang, code, stdin="", **limits):
    return collect(backend.execute(Request(lang, code, stdin=stdin.encode(),
                                           limits=replace(Limits(), **limits))))


@needs_prestart
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_same_result_in_a_ready_sandbox_and_a_fresh_one(backend, name):
    lang, code, stdin = PROGRAMS[name]
    fresh = LocalBackend(backend.cache, caps=replace(backend.caps, prestart=False), pch=backend.pch)
    limits = {"memory": 64 << 20, "disk": 8 << 20}
    cold = _run(fresh, lang, code, stdin, **limits)
    _run(backend, lang, code, stdin, **limits)  # the first run of a shape fills the pool
    pool.the_pool().wait_idle()
    served = pool.the_pool().served
    warm = _run(backend, lang, code, stdin, **limits)
    assert pool.the_pool().served > served, "the run did not start in a ready sandbox"
    for field in ("status", "message", "stdout", "stderr", "exit_code", "signal", "isolation"):
        assert getattr(warm, field) == getattr(cold, field), (field, warm, cold)


@needs_prestart
def test_nothing_of_an_earlier_run_reaches_a_later_one(backend):
    """Each ready sandbox serves one run: files in /box, /tmp and /dev/shm, SysV shared memory and
    processes of the first run are not there for the next (which starts in a pre-started one)."""
    leave = textwrap.dedent("""
        import os, subprocess, sys
        for place in ('/box', '/tmp', '/dev/shm'):
            open(place + '/left-by-first', 'w').write('x')
        subprocess.run(['ipcmk', '-M', '4096'], capture_output=True)
        if os.fork() == 0:
            os.setsid(); os.execv('/bin/sleep', ['sleep', '60'])
        print('left')
    """)
    look = textwrap.dedent("""
        import os, subprocess
        found = [p for p in ('/box', '/tmp', '/dev/shm') if os.path.exists(p + '/left-by-first')]
        shm = subprocess.run(['ipcs', '-m'], capture_output=True, text=True).stdout
        procs = [d for d in os.listdir('/proc') if d.isdigit()]
        print(found, 'shm' if '0x' in shm else 'no-shm', len(procs))
    """)
    assert _run(backend, Language.PYTHON, leave).stdout == "left\n"
    pool.the_pool().wait_idle()
    served = pool.the_pool().served
    result = _run(backend, Language.PYTHON, look)
    assert pool.the_pool().served > served
    found, shm, procs = result.stdout.split(" ", 2)[0], result.stdout.split()[1], result.stdout.split()[2]
    assert result.ok and found == "[]" and shm == "no-shm", result.stdout
    assert int(procs) <= 3, result.stdout  # itself, ipcs' parent shell at most: its own pid namespace


@needs_prestart
def test_ready_sandboxes_are_the_engines_and_end_when_emptied(backend):
    _run(backend, Language.C, PROGRAMS["hello"][1])
    pool.the_pool().wait_idle()
    me = psutil.Process()
    ready = [p for p in me.children(recursive=True) if is_prestarted(p)]
    # Per ready sandbox: its launcher and its namespace's init, as the engine's user (root, or
    # the ordinary user), and below them the program process, already as the run's identity.
    launchers = [p for p in ready if p.ppid() == me.pid]
    assert launchers, ready
    for launcher in launchers:
        init, = launcher.children()
        program, = init.children()
        assert launcher.uids().real == init.uids().real == os.getuid()
        assert program.name() == "dcodex-ready"
        if os.getuid() == 0:
            assert is_sandbox_uid(program), program.uids()
        with open(f"/proc/{program.pid}/status") as f:  # confined before its run is known
            status = dict(line.split(":\t", 1) for line in f)
        assert status["NoNewPrivs"].strip() == "1", status
        if CAPS.seccomp:
            assert status["Seccomp"].strip() == "2", status
        assert int(status["CapBnd"], 16) == 0, status["CapBnd"]
    assert pool.the_pool().ready_count() >= 1
    held = pool.the_pool().held_fds()
    pool.the_pool().close_idle()
    assert pool.the_pool().ready_count() == 0
    assert not [p for p in ready if alive(p)], "ready sandboxes outlived close_idle"
    assert not {fd for fd in held if os.path.exists(f"/proc/self/fd/{fd}")
                and os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")}


@needs_prestart
def test_a_ready_sandbox_killed_from_outside_is_passed_over(backend):
    code = PROGRAMS["hello"][1]
    _run(backend, Language.C, code)
    pool.the_pool().wait_idle()
    for p in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if is_prestarted(p):
                p.kill()
    wait_until(lambda: not [p for p in psutil.Process().children() if is_prestarted(p) and alive(p)])
    for _ in range(3):
        result = _run(backend, Language.C, code)
        assert result.ok and result.stdout == "hello\n", result


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children()
    except psutil.NoSuchProcess:
        return []


@needs_prestart
def test_a_sandbox_that_dies_as_its_run_takes_it_is_replaced_by_one_of_its_own(backend):
    """The launcher still there (stopped), its init gone: the go message cannot be delivered,
    and the run makes its own sandbox instead of failing."""
    code = PROGRAMS["hello"][1]
    _run(backend, Language.C, code)
    pool.the_pool().wait_idle()
    launchers = [p for p in psutil.Process().children() if is_prestarted(p)]
    assert launchers
    try:
        for launcher in launchers:
            with contextlib.suppress(psutil.NoSuchProcess):
                launcher.suspend()
                for init in launcher.children():
                    init.kill()
        wait_until(lambda: not [c for p in launchers for c in _children(p) if alive(c)])
        missed = pool.the_pool().missed
        result = _run(backend, Language.C, code)
        assert result.ok and result.stdout == "hello\n", result
        assert pool.the_pool().missed == missed + 1
    finally:
        for launcher in launchers:
            with contextlib.suppress(psutil.NoSuchProcess):
                launcher.resume()


@needs_prestart
def test_a_run_too_big_for_a_go_message_makes_its_own_sandbox(backend):
    args = tuple("a" * 4000 for _ in range(pool.GO_MAX_BYTES // 4000 + 1))
    code = "import sys\nprint(len(sys.argv) - 1, sum(map(len, sys.argv[1:])))"
    _run(backend, Language.PYTHON, code)
    pool.the_pool().wait_idle()
    served, missed = pool.the_pool().served, pool.the_pool().missed
    result = collect(backend.execute(Request(Language.PYTHON, code, args=args)))
    assert result.ok and result.stdout == f"{len(args)} {4000 * len(args)}\n", result
    assert (pool.the_pool().served, pool.the_pool().missed) == (served, missed)


ENGINE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from dcodex_kernel.backends.local import LocalBackend
    from dcodex_kernel.events import collect
    from dcodex_kernel.request import Language, Request
    from dcodex_kernel.sandbox import pool
    backend = LocalBackend()
    collect(backend.execute(Request(Language.PYTHON, "print(1)")))
    pool.the_pool().wait_idle()
    print(pool.the_pool().ready_count(), flush=True)
    time.sleep(60)
""")


@needs_prestart
def test_ready_sandboxes_die_with_an_engine_killed_outright(tmp_path):
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    engine = subprocess.Popen([sys.executable, "-c", ENGINE, checkout], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "HOME": str(tmp_path)})
    try:
        assert int(engine.stdout.readline()) >= 1
        ready = [p for p in psutil.Process(engine.pid).children(recursive=True) if is_prestarted(p)]
        assert ready
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        assert wait_until(lambda: not [p for p in ready if alive(p)], timeout=5), ready
    finally:
        engine.kill()
        engine.wait()
        engine.stdout.close()


def test_pool_off_with_dcodex_pool_0():
    assert pool.pool_size({"DCODEX_POOL": "0"}) == 0
    assert pool.pool_size({"DCODEX_POOL": "3"}) == 3
    assert pool.pool_size({"DCODEX_POOL": "many"}) == pool.POOL_SIZE
    assert pool.pool_size({}) == pool.POOL_SIZE
