"""The local engine against real gcc/g++/python: statuses, streaming, limits, hostile programs,
and that every run ends with nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.cancel import CancelToken
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.events import Output, Result, Status, collect
from dcodex_kernel.request import Language, Limits, Request
from dcodex_kernel.sandbox import isolation

pytestmark = pytest.mark.usefixtures("no_leftovers")


def run(backend, language, code, *, cancel=None, **limits_and_fields):
    """Run a program; return (result, [(seconds since start, event)])."""
    limit_names = {f for f in Limits.__dataclass_fields__}
    limits = Limits(**{k: v for k, v in limits_and_fields.items() if k in limit_names})
    fields = {k: v for k, v in limits_and_fields.items() if k not in limit_names}
    request = Request(Language(language), code, limits=limits, **fields)
    start = time.monotonic()
    timed = [(time.monotonic() - start, e) for e in backend.execute(request, cancel)]
    results = [e for _, e in timed if isinstance(e, Result)]
    assert len(results) == 1 and isinstance(timed[-1][1], Result), "exactly one Result, last"
    return results[0], timed


def text(timed, stream="stdout", phase="run"):
    return "".join(e.text for _, e in timed if isinstance(e, Output) and e.stream == stream and e.phase == phase)


# ---------------------------------------------------------------- ordinary outcomes

HELLO = {
    "c": '#include <stdio.h>\nint main(void) { printf("hello\\n"); return 0; }\n',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }\n',
    "python": 'print("hello")\n',
}


@pytest.mark.parametrize("language", HELLO)
def test_hello_world_ok_with_stats(backend, language):
    result, timed = run(backend, language, HELLO[language])
    assert result.status is Status.OK and result.message == ""
    assert text(timed) == "hello\n"
    assert result.exit_code == 0 and result.wall_s > 0 and result.peak_memory > 0
    assert "rlimits" in result.isolation


def test_build_cache_hit_skips_compilation(tmp_path):
    backend = LocalBackend(BuildCache(tmp_path))
    code = '#include <stdio.h>\nint main(void) { puts("cached?"); }\n'
    first, _ = run(backend, "c", code)
    second, timed = run(backend, "c", code)
    assert (first.cached, second.cached) == (False, True)
    assert text(timed) == "cached?\n"
    # The summary says so, and only for a build; the local engine never replays a result.
    assert "cached build" not in first.summary() and second.summary().endswith(", cached build)")
    assert not (first.replayed or second.replayed)
    python = [run(backend, "python", 'print("no build")\n')[0] for _ in range(2)]
    assert [(r.cached, r.replayed) for r in python] == [(False, False)] * 2
    assert not any("cached" in r.summary() or "replayed" in r.summary() for r in python)
    other_flags, _ = run(backend, "c", code, cflags=("-O0",))
    assert not other_flags.cached  # flags are part of the key
    no_cache, _ = run(backend, "c", code, cache=False)
    assert not no_cache.cached


def test_build_cache_is_size_bounded(tmp_path):
    backend = LocalBackend(BuildCache(tmp_path, max_bytes=40_000))  # room for ~2 small programs
    for i in range(5):
        run(backend, "c", f"int main(void) {{ return {i}; }}\n")
    assert backend.cache.size() <= 40_000
    assert len([p for p in os.listdir(tmp_path) if not p.startswith(".")]) < 5


def test_build_cache_shared_by_concurrent_runs(tmp_path):
    """Several threads building the same program at once all succeed; the cache stays valid."""
    backend = LocalBackend(BuildCache(tmp_path))
    code = '#include <stdio.h>\nint main(void) { puts("same"); }\n'
    results = []
    threads = [threading.Thread(target=lambda: results.append(run(backend, "c", code))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r, _ in results] == [Status.OK] * 4
    assert all(text(timed) == "same\n" for _, timed in results)
    assert run(backend, "c", code)[0].cached


def test_runtime_error_keeps_exit_code(backend):
    result, _ = run(backend, "c", "int main(void) { return 3; }")
    assert result.status is Status.RUNTIME_ERROR and result.exit_code == 3
    assert result.message == "Exited with status 3"


def test_python_exception_is_runtime_error(backend):
    result, timed = run(backend, "python", "raise ValueError('boom')")
    assert result.status is Status.RUNTIME_ERROR and result.exit_code == 1
    assert "ValueError: boom" in text(timed, "stderr")


def test_segfault_is_signaled_with_name(backend):
    result, _ = run(backend, "c", "int main(void) { volatile int *p = 0; return *p; }")
    assert result.status is Status.SIGNALED and result.signal == 11
    assert "SIGSEGV" in result.message


@pytest.mark.parametrize("language", ["c", "cpp"])
def test_compile_error_gives_diagnostics(backend, language):
    result, timed = run(backend, language, "int main() { return undefined_name; }")
    assert result.status is Status.COMPILE_ERROR
    assert "undefined_name" in result.message and "error" in result.message
    diagnostics = text(timed, "stderr", phase="compile")
    assert "main." in diagnostics and "undefined_name" in diagnostics
    assert text(timed) == ""  # nothing ran


def test_compiler_flags_and_program_arguments(backend):
    code = ('#include <math.h>\n#include <stdio.h>\n'
            'int main(int argc, char **argv) { printf("%.1f %s %d\\n", sqrt(16.0), argv[1], ARG); }\n')
    result, timed = run(backend, "c", code, cflags=("-DARG=7",), ldflags=("-lm",), args=("two words",))
    assert result.status is Status.OK, text(timed, "stderr", "compile")
    assert text(timed) == "4.0 two words 7\n"


def test_stdin_bytes_and_eof(backend):
    code = "import sys\ndata = sys.stdin.buffer.read()\nprint(len(data), sum(map(int, data.split())))"
    result, timed = run(backend, "python", code, stdin=b"1 2 3\n4\n")
    assert text(timed) == "8 10\n"
    result, timed = run(backend, "python", code)
    assert text(timed) == "0 0\n"  # no stdin means EOF, not a hang


def test_large_stdin_is_streamed_without_deadlock(backend):
    # More than a pipe buffer in both directions at once: the supervisor must interleave.
    code = "import sys\nfor line in sys.stdin: sys.stdout.write(line)"
    data = b"".join(b"line %06d\n" % i for i in range(60_000))  # ~720 KB
    result, timed = run(backend, "python", code, stdin=data, output=1 << 20)
    assert result.status is Status.OK
    assert text(timed).encode() == data


def test_program_dir_is_private_and_removed(backend):
    code = ('import os\nopen("notes.txt", "w").write("kept?")\n'
            'print(open("notes.txt").read(), os.getcwd())')
    result, timed = run(backend, "python", code)
    kept, cwd = text(timed).split()
    assert kept == "kept?"
    if backend.caps.filesystem:
        assert cwd == "/box"  # the run's own tmpfs: nothing of it is on the host's disk
    else:
        assert cwd.startswith("/tmp/dcodex-run-")


def test_environment_is_scrubbed(backend, monkeypatch):
    monkeypatch.setenv("DCODEX_TEST_SECRET", "hunter2")
    result, timed = run(backend, "python", "import os\nprint(sorted(os.environ))")
    assert "DCODEX_TEST_SECRET" not in text(timed)
    assert "hunter2" not in text(timed)


@pytest.mark.skipif(os.geteuid() != 0, reason="per-run uid needs root")
def test_runs_as_unprivileged_uid_and_cannot_read_root_files(backend):
    code = ("import os\nprint(os.getuid() >= 61000, os.getgroups())\n"
            "for path in ('/root', '/etc/shadow'):\n"
            "    try:\n        os.listdir(path) if path == '/root' else open(path).read()\n        print('READ', path)\n"
            "    except PermissionError:\n        print('denied', path)\n")
    result, timed = run(backend, "python", code)
    assert text(timed) == "True []\ndenied /root\ndenied /etc/shadow\n"


def test_no_network_only_loopback_down(backend):
    caps_layers = run(backend, "python", "pass")[0].isolation
    if "no-network" not in caps_layers:
        pytest.skip("this machine allows no network namespace (shown as degraded by dcodex doctor)")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # The interfaces and routes of the run's network namespace, from its own /proc/net (the
    # seccomp filter refuses the netlink socket socket.if_nameindex() would use).
    code = ("import socket\n"
            "print([l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]])\n"
            "print(len(open('/proc/net/route').readlines()[1:]))\n"
            f"try:\n    s = socket.socket(); s.settimeout(2); s.connect(('127.0.0.1', {port})); print('CONNECTED')\n"
            "except OSError as e:\n    print('refused:', e.errno)\n")
    try:
        result, timed = run(backend, "python", code)
    finally:
        listener.close()
    lines = text(timed).splitlines()
    assert lines[0] == "['lo']"
    assert lines[1] == "0"  # no route anywhere
    assert lines[2].startswith("refused:")


# ---------------------------------------------------------------- streaming

SLOW_PRINT = {
    "c": '#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf("first\\n"); sleep(1); printf("second\\n"); }\n',
    "cpp": '#include <iostream>\n#include <unistd.h>\nint main() { std::cout << "first\\n"; sleep(1); std::cout << "second\\n"; }\n',
    "python": 'import time\nprint("first")\ntime.sleep(1)\nprint("second")\n',
}


@pytest.mark.parametrize("language", SLOW_PRINT)
def test_output_streams_while_program_runs(backend, language):
    result, timed = run(backend, language, SLOW_PRINT[language])
    assert result.status is Status.OK
    first_at = next(t for t, e in timed if isinstance(e, Output) and "first" in e.text)
    end_at = timed[-1][0]
    assert end_at - first_at > 0.8, f"first line at {first_at:.2f}s, end at {end_at:.2f}s"


def test_output_written_close_together_comes_in_few_events(backend):
    # 40 lines a millisecond apart: each read apart, yet a handful of events, since output is
    # held up to HOLD_S (relay.py and every front door send one message per event); the same
    # text, in order.
    code = ('#include <stdio.h>\n#include <unistd.h>\nint main(void) {\n'
            '  for (int i = 0; i < 40; i++) { printf("%d\\n", i); fflush(stdout); usleep(1000); } }\n')
    result, timed = run(backend, "c", code)
    outputs = [e for _, e in timed if isinstance(e, Output)]
    assert text(timed) == "".join(f"{i}\n" for i in range(40))
    assert len(outputs) <= 20, len(outputs)


def test_utf8_split_across_writes_is_not_broken(backend):
    # "é" = C3 A9: the two bytes arrive in separate reads; the decoder must join them.
    code = ('#include <stdio.h>\n#include <unistd.h>\nint main(void) {\n'
            '  fputs("caf\\xc3", stdout); fflush(stdout); usleep(200000);\n'
            '  fputs("\\xa9!\\n", stdout); }\n')
    result, timed = run(backend, "c", code)
    assert text(timed) == "café!\n"


def test_invalid_utf8_and_binary_output_never_raise(backend):
    code = ('#include <stdio.h>\nint main(void) {\n'
            '  for (int i = 0; i < 256; i++) putchar(i);\n'
            '  fputs("\\xff\\xfe tail \\xc3", stderr); }\n')
    result, timed = run(backend, "c", code)
    assert result.status is Status.OK
    assert len(text(timed)) >= 128 and "\ufffd" in text(timed)
    assert text(timed, "stderr") == "\ufffd\ufffd tail \ufffd"


def test_huge_single_line_without_newline(backend):
    code = "import sys\nsys.stdout.write('x' * 300_000)"
    result, timed = run(backend, "python", code)
    assert result.status is Status.OK and text(timed) == "x" * 300_000


# ---------------------------------------------------------------- limits and hostile programs

def test_infinite_loop_hits_cpu_limit(backend):
    result, _ = run(backend, "c", "int main(void) { for (;;) {} }", cpu_s=1, wall_s=10)
    assert result.status is Status.TIME_LIMIT
    assert result.message.startswith("CPU time limit of 1 s exceeded (")
    assert result.cpu_s >= 0.9 and result.wall_s < 5


def test_sleeping_program_hits_wall_clock(backend):
    result, _ = run(backend, "python", "import time\ntime.sleep(60)", wall_s=0.5)
    assert result.status is Status.WALL_TIMEOUT
    assert result.message == "Wall-clock limit of 0.5 s exceeded"
    assert 0.5 <= result.wall_s < 2


MEMORY_BOMBS = {
    "c": ('#include <stdlib.h>\n#include <string.h>\n#include <stdio.h>\n'
          'int main(void) { for (;;) { char *p = malloc(1 << 20);\n'
          '  if (!p) { fprintf(stderr, "malloc failed\\n"); return 1; } memset(p, 1, 1 << 20); } }\n'),
    "cpp": ('#include <vector>\n#include <cstring>\nint main() { std::vector<char*> v;\n'
            '  for (;;) { char *p = new char[1 << 20]; std::memset(p, 1, 1 << 20); v.push_back(p); } }\n'),
    "python": "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 20))\n",
}


@pytest.mark.parametrize("language", MEMORY_BOMBS)
def test_memory_bomb_is_memory_limit(backend, language):
    result, _ = run(backend, language, MEMORY_BOMBS[language], memory=64 << 20)
    assert result.status is Status.MEMORY_LIMIT, result
    assert result.message == "Memory limit of 64 MiB reached"


def test_huge_single_allocation_is_memory_limit(backend):
    result, _ = run(backend, "cpp", "int main() { char *p = new char[1L << 34]; return p[0]; }")
    assert result.status is Status.MEMORY_LIMIT


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_is_cut_exactly_at_the_cap(backend, stream):
    code = f"import sys\nwhile True:\n    sys.{stream}.write('y' * 1000 + '\\n')"
    result, timed = run(backend, "python", code, output=10_000)
    assert result.status is Status.OUTPUT_LIMIT and result.truncated
    assert result.message == "Output limit of 9.8 KiB reached; the program was stopped"
    delivered = text(timed, stream)
    marker = "\n[Output truncated: exceeded 9 KB limit]\n"
    if stream == "stderr":
        assert delivered.endswith(marker)
        delivered = delivered[: -len(marker)]
    else:
        assert text(timed, "stderr") == marker
    assert len(delivered) == 10_000  # exact: not one byte past the cap


def test_flood_without_newline_is_cut_too(backend):
    code = '#include <stdio.h>\nint main(void) { for (;;) putchar(65); }'
    result, timed = run(backend, "c", code, output=5000)
    assert result.status is Status.OUTPUT_LIMIT and text(timed) == "A" * 5000


# The classic double fork + setsid, with stdio closed so the daemon holds none of our pipes:
# only the sandbox's pid namespace (or subreaper) can find it.
DAEMON = ("import os, time\n"
          "if os.fork() == 0:\n"
          "    os.setsid()\n"
          "    if os.fork() == 0:\n"
          "        for fd in (0, 1, 2): os.close(fd)\n"
          "        time.sleep(300)\n"
          "    os._exit(0)\n"
          "os.wait()\nprint('parent done')\n")


def test_daemon_that_escaped_the_session_dies_with_the_run(backend):
    result, timed = run(backend, "python", DAEMON)
    assert result.status is Status.OK and text(timed) == "parent done\n"
    assert result.wall_s < 2  # did not wait for the daemon
    # no_leftovers checks the daemon is gone


def test_files_left_in_shared_tmp_are_removed(backend):
    if os.geteuid() != 0:
        pytest.skip("files are found by their owner, the per-run uid (root only)")
    name = f"/tmp/dcodex-stray-{os.getpid()}"
    result, _ = run(backend, "python", f"open({name!r}, 'w').write('x')")
    assert result.status is Status.OK
    assert not os.path.exists(name)


def test_fork_bomb_is_contained(backend, pids_cgroup):
    code = "#include <unistd.h>\nint main(void) { for (;;) fork(); }"
    result, _ = run(backend, "c", code, wall_s=2, processes=32)
    assert result.status in (Status.WALL_TIMEOUT, Status.TIME_LIMIT), result
    # The sandbox's own process limit held: the cgroup (our safety net) never hit its cap.
    assert pids_cgroup.cap_hits() == 0, "the fork bomb hit the test's safety cgroup"
    assert not pids_cgroup.leftovers()


KILL_EVERYTHING_SCRIPT = """
import json, subprocess, sys
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.events import collect
from dcodex_kernel.request import Language, Request
code = '#include <signal.h>\\nint main(void) { kill(-1, SIGKILL); kill(-1, SIGTERM); return 0; }'
bystander = subprocess.Popen(["sleep", "60"])
result = collect(LocalBackend(BuildCache(sys.argv[1])).execute(Request(Language.C, code)))
alive = bystander.poll() is None
bystander.kill()
print(json.dumps({"status": result.status.value, "bystander_alive": alive}))
"""


def test_program_that_signals_everything_it_can(tmp_path):
    """kill(-1, SIGKILL) from a program reaches only the run's own processes. The engine runs in
    a pid namespace the test makes with util-linux `unshare`, outside the code under test, so
    that if the sandbox failed the signal would still reach nothing beyond this test."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and util-linux unshare to bound the signal; not run unbounded")
    proc = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, "-c", KILL_EVERYTHING_SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.splitlines()[-1])
    assert outcome == {"status": "ok", "bystander_alive": True}


# ---------------------------------------------------------------- ending a run early

def test_cancel_stops_a_run_at_once(backend):
    with CancelToken() as token:
        timer = threading.Timer(0.3, token.cancel)
        timer.start()
        result, _ = run(backend, "python", "import time\ntime.sleep(60)", cancel=token)
        timer.join()
    assert result.status is Status.CANCELLED and result.message == "Interrupted"
    assert result.wall_s < 0.8


def test_consumer_going_away_kills_the_run(backend):
    events = backend.execute(Request(Language.PYTHON, "import time\nprint('up', flush=True)\ntime.sleep(60)"))
    try:
        first = next(events)  # -u: print() may write "up" and "\n" separately
    finally:
        events.close()  # client gone: no_leftovers checks the program died and the dir is gone
    assert isinstance(first, Output) and first.text.startswith("up")


def test_rejected_requests(backend):
    assert run(backend, "c", "int main(){}\0")[0].status is Status.REJECTED
    result, _ = run(backend, "c", "int main(){}", cflags=("-o/etc/passwd",))
    assert result.status is Status.REJECTED and "-o" in result.message


def test_collect_fills_stdout_and_stderr(backend):
    result = collect(backend.execute(Request(Language.PYTHON, "import sys\nprint('o')\nprint('e', file=sys.stderr)")))
    assert (result.stdout, result.stderr) == ("o\n", "e\n")


# ---------------------------------------------------------------- without namespaces

@pytest.fixture(scope="module")
def degraded_backend(tmp_path_factory):
    """The engine as it runs where no pid namespace can be made (e.g. a locked-down container):
    the launcher is a child subreaper and hunts down what the program left."""
    caps = isolation.detect()
    return LocalBackend(BuildCache(tmp_path_factory.mktemp("cache")),
                        caps=isolation.Capabilities(root=caps.root, pid_namespace=False, user_namespace=False))


def test_degraded_mode_says_so(degraded_backend):
    result, _ = run(degraded_backend, "python", "print(1)")
    assert "subreaper" in result.isolation and "pid-namespace" not in result.isolation
    assert any("pid-namespace" in m for m in degraded_backend.caps.missing())


def test_degraded_mode_still_kills_daemons(degraded_backend):
    result, _ = run(degraded_backend, "python", DAEMON)
    assert result.status is Status.OK and result.wall_s < 2


def test_degraded_mode_wall_timeout_kills_the_tree(degraded_backend):
    code = "import os, time\nos.fork()\nos.fork()\ntime.sleep(60)"
    result, _ = run(degraded_backend, "python", code, wall_s=0.5)
    assert result.status is Status.WALL_TIMEOUT


def test_degraded_mode_fork_bomb(degraded_backend, pids_cgroup):
    result, _ = run(degraded_backend, "c", "#include <unistd.h>\nint main(void) { for (;;) fork(); }",
                    wall_s=1.5, processes=32)
    assert result.status in (Status.WALL_TIMEOUT, Status.TIME_LIMIT)
    assert pids_cgroup.cap_hits() == 0 and not pids_cgroup.leftovers()


def test_hostile_compilation_is_bounded(backend):
    # The compiler reads an endless file: its own (looser) limits stop it.
    request = Request(Language.C, '#include "/dev/urandom"\nint main(void) {}\n',
                      compile_limits=Limits(wall_s=1.5, cpu_s=5, memory=256 << 20))
    start = time.monotonic()
    result = collect(backend.execute(request))
    assert result.status is Status.COMPILE_ERROR
    assert result.message.startswith("Compilation stopped:") or "error" in result.message
    assert time.monotonic() - start < 5


def test_cached_build_replays_compiler_warnings(tmp_path):
    backend = LocalBackend(BuildCache(tmp_path))
    code = "int main(void) { int unused; return 0; }\n"
    first, timed_first = run(backend, "c", code)
    second, timed_second = run(backend, "c", code)
    assert second.cached
    warning = text(timed_first, "stderr", "compile")
    assert "unused" in warning and "\x1b[" not in warning
    assert text(timed_second, "stderr", "compile") == warning


OOM_SCRIPT = """
import json, os, sys
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.events import collect
from dcodex_kernel.request import Language, Limits, Request
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
code = "chunks = []\\nwhile True:\\n    chunks.append(bytearray(8 << 20))\\n"
result = collect(LocalBackend(BuildCache(sys.argv[2])).execute(
    Request(Language.PYTHON, code, limits=Limits(memory=1 << 30))))
print(json.dumps({"status": result.status.value, "signal": result.signal, "message": result.message}))
"""


def test_oom_killer_is_memory_limit(tmp_path):
    """A program the kernel's OOM killer kills is reported as memory_limit, not as a mysterious
    SIGKILL. The engine runs in a separate process inside a 128 MiB memory cgroup made for the
    test (far below the program's own 1 GiB limit); the launcher makes the program the killer's
    first choice, so neither that engine nor this test process is picked."""
    root = "/sys/fs/cgroup/memory"
    if not os.access(root, os.W_OK):
        pytest.skip("no writable memory cgroup (v1) to make an OOM kill happen safely")
    own = next(line.split(":", 2)[2].strip() for line in open("/proc/self/cgroup")
               if "memory" in line.split(":")[1].split(","))
    path = os.path.join(root, own.lstrip("/"), f"dcodex-oom-{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    try:
        with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(128 << 20))
        proc = subprocess.run([sys.executable, "-c", OOM_SCRIPT, path, str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.splitlines()[-1])
    assert outcome["status"] == "memory_limit" and outcome["signal"] == 9, outcome
    # The run's own cgroup limit (1 GiB) was not what ran out: the message must not claim it.
    assert "out-of-memory killer" in outcome["message"]


def test_run_dir_with_locked_subdirectories_is_removed(backend):
    # A program may take away every permission from what it made; the engine still cleans up
    # (no_leftovers checks the run dir is gone).
    code = ('import os\nos.makedirs("locked/inner")\nopen("locked/inner/f", "w").write("x")\n'
            'os.chmod("locked/inner", 0)\nos.chmod("locked", 0)\nprint("locked")\n')
    result, timed = run(backend, "python", code)
    assert result.status is Status.OK and text(timed) == "locked\n"


def test_program_is_the_oom_killers_first_choice(backend):
    result, timed = run(backend, "python", "print(open('/proc/self/oom_score_adj').read().strip())")
    assert text(timed) == "1000\n"


# ---------------------------------------------------------------- confinement

def test_program_has_no_privileges(backend):
    """No capabilities to regain, no setuid gains (no_new_privs), and the seccomp filter."""
    code = ("for line in open('/proc/self/status'):\n"
            "    if line.split(':')[0] in ('CapBnd', 'CapEff', 'CapAmb', 'NoNewPrivs', 'Seccomp'):\n"
            "        print(line.strip().replace('\\t', ' '))\n")
    result, timed = run(backend, "python", code)
    status = dict(line.split(": ", 1) for line in text(timed).splitlines())
    assert status["CapBnd"] == status["CapEff"] == status["CapAmb"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    if "seccomp" in result.isolation:
        assert status["Seccomp"] == "2"  # a filter is loaded


def test_python_programs_import_the_engines_packages(backend):
    """A package installed next to the kernel (psutil is in the engine's environment, not in
    the system's) imports in a Python cell: the engine's interpreter and venv are visible."""
    result, timed = run(backend, "python", "import sys, psutil\nprint(sys.prefix)")
    assert result.status is Status.OK, result
    if backend.caps.filesystem:
        assert text(timed) == f"{sys.prefix}\n"


def test_dcodex_python_picks_the_interpreter(tmp_path):
    """DCODEX_PYTHON (read when the engine starts) names the interpreter Python programs get:
    here a venv made under /tmp, whose prefix a confined run must see inside its own /tmp."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    other = str(venv / "bin" / "python")
    script = ("import json, sys\nfrom dcodex_kernel.backends.local import LocalBackend\n"
              "from dcodex_kernel.events import collect\nfrom dcodex_kernel.request import Request\n"
              "r = collect(LocalBackend().execute(Request('python', 'import sys; print(sys.executable, sys.prefix)')))\n"
              "print(json.dumps([r.status.value, r.message, r.stdout]))\n")
    env = {**os.environ, "DCODEX_PYTHON": other, "DCODEX_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    status, message, stdout = json.loads(out.stdout.splitlines()[-1])
    assert status == "ok" and stdout == f"{other} {venv}\n", (message, out.stderr)


def test_strict_mode_refuses_a_machine_without_a_layer(tmp_path):
    caps = isolation.detect()
    weak = isolation.Capabilities(root=caps.root, pid_namespace=False, user_namespace=False)
    result = collect(LocalBackend(BuildCache(tmp_path), caps=weak, strict=True).execute(
        Request(Language.PYTHON, "print('should not run')")))
    assert result.status is Status.REJECTED and result.stdout == ""
    assert "strict mode" in result.message and "filesystem" in result.message and "seccomp" in result.message


def test_strict_mode_runs_where_every_layer_is_there(tmp_path):
    backend = LocalBackend(BuildCache(tmp_path), strict=True)
    result = collect(backend.execute(Request(Language.PYTHON, "print('ran')")))
    if backend.caps.strict_problems():
        assert result.status is Status.REJECTED
    else:
        assert result.status is Status.OK and result.stdout == "ran\n"


HOSTILE_LEFTOVERS = '''
import os
for i in range(1200):
    os.mkdir("d")
    os.chdir("d")
os.chdir(os.environ["HOME"])
os.makedirs("locked/inner")
os.chmod("locked/inner", 0)
os.chmod("locked", 0)
os.symlink("/", "escape")
os.symlink("/etc/passwd", "passwd")
cwd = os.getcwd()
os.chdir("/")
for step in (lambda: os.rename(cwd, cwd + "-moved"), lambda: os.symlink("/", cwd)):
    try:
        step()
    except OSError:
        pass
print("left a mess")
'''


def test_unconfined_cleanup_survives_what_a_program_leaves(degraded_backend, no_leftovers):
    """Where the filesystem is not confined the run dir is on the host: a 1,200-deep tree,
    mode-000 dirs, links to / and the run dir renamed and replaced by a link are all removed
    without following a link or changing a mode outside it, and later runs still work."""
    modes = {p: os.stat(p).st_mode for p in ("/", "/tmp", "/etc/passwd")}
    result, timed = run(degraded_backend, "python", HOSTILE_LEFTOVERS)
    assert result.status is Status.OK and text(timed) == "left a mess\n", result
    assert {p: os.stat(p).st_mode for p in modes} == modes
    assert not [d for d in os.listdir("/tmp") if d.startswith("dcodex-run-") and d.endswith("-moved")]
    again, timed = run(degraded_backend, "python", "print('still fine')")
    assert again.status is Status.OK and text(timed) == "still fine\n"


# Each step of the build (cc1, as, collect2) runs the script: it must not fail the second time.
@pytest.mark.parametrize("plant", ["ln -sf /etc/passwd main", "rm -f main; mkfifo main",
                                   "echo x > f; ln -f f main"])
def test_unconfined_compile_output_must_be_a_program_of_the_run(degraded_backend, plant):
    """A compile wrapper that leaves a link, a FIFO or a hard link as the program: refused
    (never followed, never blocked on), even without a confined filesystem."""
    request = Request(Language.C, '#include <stdio.h>\nint main(void) { puts("x"); }\n',
                      cflags=("-wrapper", f"/bin/sh,-c,{plant}"), cache=False)
    result = collect(degraded_backend.execute(request))
    assert result.status is Status.COMPILE_ERROR and "refused" in result.message, result


def test_disk_too_small_for_the_program_is_rejected(backend):
    """A program (here 2 MiB of initialised data) larger than its --disk cannot be put in its
    run dir: a clear rejected, not an internal error."""
    code = '#include <stdio.h>\nstatic char big[2 << 20] = {1};\nint main(int argc, char **argv) { (void)argv; printf("%d\\n", big[argc * 4096]); }\n'
    result = collect(backend.execute(Request(Language.C, code, limits=Limits(disk=1 << 20))))
    if not backend.caps.filesystem:
        pytest.skip("no confined filesystem here: --disk bounds nothing")
    assert result.status is Status.REJECTED and "Disk limit of 1 MiB" in result.message, result


def test_each_run_has_its_own_memory_limit_peak_and_verdict(backend):
    """Consecutive runs (as root they share their uid's memory cgroup slot) each get their own
    limit, peak and OOM verdict: a run after an OOM-killed one is ok, a lower limit and then a
    higher one again both hold, and a small run after a big one reports a small peak."""
    hold = "b = bytearray({mb} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('held')"
    steps = [(256, 150, Status.OK), (64, 150, Status.MEMORY_LIMIT), (256, 150, Status.OK),
             (256, 1, Status.OK)]
    results = []
    for limit, mb, expect in steps:
        result, _ = run(backend, "python", hold.format(mb=mb), memory=limit << 20)
        assert result.status is expect, (limit, mb, result)
        results.append(result)
    assert results[0].peak_memory >= 150 << 20
    assert results[3].peak_memory < 64 << 20, "the peak of an earlier run leaked into a later one"
