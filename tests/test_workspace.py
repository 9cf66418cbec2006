"""Session workspaces: `%%file NAME` in the kernels, `%%dcodex file NAME` in IPython, later runs
seeing the files (headers, extra sources, data), the build cache keyed on them, names that would
leave the workspace refused, the directory removed with the session; `dcodex run --file`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.events import Status, collect
from dcodex_kernel.kernel import parse_cell
from dcodex_kernel.options import OptionError
from dcodex_kernel.request import Language, Limits, Request
from dcodex_kernel.sandbox import isolation
from dcodex_kernel.workspace import Workspace, WorkspaceError, check_name, reserved_names

from .kernel_support import execute, start_kernel, stop_kernel
from .support import ipython_shell, wait_until

TWICE_H = "int twice(int x);\n"
TWICE_C = '#include "twice.h"\nint twice(int x) { return 2 * x; }\n'
MAIN_C = '#include <stdio.h>\n#include "twice.h"\nint main(void) { printf("%d\\n", twice(21)); }\n'


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return LocalBackend(BuildCache(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def unconfined(tmp_path_factory):
    """The engine where no mount namespace can be made: inputs are copied into a host run dir."""
    caps = isolation.detect()
    return LocalBackend(BuildCache(tmp_path_factory.mktemp("cache")),
                        caps=isolation.Capabilities(root=caps.root, pid_namespace=False,
                                                    user_namespace=False))


# ---- names and the directory -------------------------------------------------------------

@pytest.mark.parametrize("name, fragment", [
    ("../x.h", "leave the workspace"), ("a/../../x", "leave the workspace"),
    ("/etc/passwd", "absolute"), ("a//b", "empty"), ("./a", "'.'"), ("", "needs a name"),
    ("a\nb", "control"), ("main.c", "own program file"), ("x" * 300, "longer than 255"),
    ("main/data.txt", "'main' is the name of the cell's own program file"),
    ("dcodex_check/table.txt", "where a --checker is given a case's input"),
])
def test_names_that_escape_or_clash_are_refused(name, fragment):
    with pytest.raises(WorkspaceError, match=fragment):
        check_name(name)


def test_reserved_names_are_the_runs_own_files():
    from dcodex_kernel.languages import LINEBUF_FILE, PROGRAM, RECIPES
    assert {PROGRAM, LINEBUF_FILE, "main.c", "main.cpp", "main.py"} <= reserved_names()
    assert all(r.source_file in reserved_names() for r in RECIPES.values())


def test_workspace_is_private_lazy_and_removed(tmp_path):
    ws = Workspace(str(tmp_path))
    assert ws.path is None and ws.files() == () and os.listdir(tmp_path) == []
    ws.write("cases/1.in", b"3 4\n")
    assert stat.S_IMODE(os.stat(ws.path).st_mode) == 0o700
    assert ws.write("cases/1.in", b"5\n", append=True) == 6
    assert ws.listing() == [("cases/1.in", 6)]
    assert "cases/1.in" in ws.describe()
    path = ws.path
    ws.close()
    assert not os.path.exists(path) and os.listdir(tmp_path) == []
    with pytest.raises(WorkspaceError, match="closed"):
        ws.write("a", b"")


def test_links_in_the_workspace_are_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host file")
    ws = Workspace(str(tmp_path))
    ws.write("a.h", b"")
    os.symlink(secret, os.path.join(ws.path, "link.h"))  # put there by hand
    with pytest.raises(WorkspaceError, match="link"):
        ws.files()
    with pytest.raises(WorkspaceError):
        ws.write("link.h", b"overwrite")  # never written through
    assert secret.read_text() == "host file"
    os.symlink(tmp_path, os.path.join(ws.path, "dir"))
    with pytest.raises(WorkspaceError, match="link"):
        ws.write("dir/x", b"")
    assert not (tmp_path / "x").exists()
    ws.close()
    assert secret.exists()


def test_quota_and_file_count(tmp_path):
    ws = Workspace(str(tmp_path), max_bytes=100, max_files=2)
    ws.write("a", b"x" * 60)
    with pytest.raises(WorkspaceError, match="quota"):
        ws.write("b", b"x" * 41)
    ws.write("a", b"x" * 100)  # a rewrite counts its new size only
    ws.write("a", b"")
    with pytest.raises(WorkspaceError, match="is a file"):
        ws.write("a/x", b"")
    ws.write("b", b"")
    with pytest.raises(WorkspaceError, match="maximum of 2"):
        ws.write("c", b"")
    ws.close()


# ---- the engine --------------------------------------------------------------------------

@pytest.mark.usefixtures("no_leftovers")
def test_header_extra_source_and_data_file_in_both_engine_modes(engine, unconfined):
    files = {"twice.h": TWICE_H.encode(), "lib/twice.c": TWICE_C.replace('"twice.h"', '"../twice.h"').encode(),
             "data/in.txt": b"from a data file\n"}
    code = ('#include <stdio.h>\n#include "twice.h"\nint main(void) { char b[64];\n'
            '  FILE *f = fopen("data/in.txt", "r"); fgets(b, sizeof b, f);\n'
            '  printf("%d %s", twice(21), b); }\n')
    for backend in (engine, unconfined):
        result = collect(backend.execute(Request(Language.C, code, files=files, sources=("lib/twice.c",))))
        assert (result.status, result.stdout) == (Status.OK, "42 from a data file\n"), result
        py = collect(backend.execute(Request(Language.PYTHON, 'print(open("data/in.txt").read(), end="")',
                                             files=files)))
        assert (py.status, py.stdout) == (Status.OK, "from a data file\n"), py


@pytest.mark.usefixtures("no_leftovers")
def test_a_changed_header_recompiles(engine):
    code = '#include <stdio.h>\n#include "n.h"\nint main(void) { printf("%d\\n", N); }\n'
    first = collect(engine.execute(Request(Language.C, code, files={"n.h": b"#define N 1\n"})))
    again = collect(engine.execute(Request(Language.C, code, files={"n.h": b"#define N 1\n"})))
    changed = collect(engine.execute(Request(Language.C, code, files={"n.h": b"#define N 2\n"})))
    assert (first.stdout, first.cached) == ("1\n", False)
    assert (again.stdout, again.cached) == ("1\n", True)
    assert (changed.stdout, changed.cached) == ("2\n", False)


@pytest.mark.usefixtures("no_leftovers")
def test_a_program_changes_only_its_own_copy(engine):
    files = {"state.txt": b"original\n"}
    code = 'print(open("state.txt").read(), end=""); open("state.txt", "w").write("changed\\n")'
    for _ in range(2):
        result = collect(engine.execute(Request(Language.PYTHON, code, files=files)))
        assert result.stdout == "original\n"


@pytest.mark.usefixtures("no_leftovers")
def test_files_that_do_not_fit_the_disk_are_rejected(engine):
    result = collect(engine.execute(Request(Language.PYTHON, "print(1)", limits=Limits(disk=1 << 20),
                                            files={"big.bin": b"\0" * (2 << 20)})))
    assert result.status is Status.REJECTED, result


def test_bad_sources_are_refused():
    with pytest.raises(ValueError, match="not a file of the session workspace"):
        Request(Language.C, "int main(){}", sources=("missing.c",))
    with pytest.raises(ValueError, match="not a C/C.. source"):
        Request(Language.C, "int main(){}", files={"a.h": b""}, sources=("a.h",))
    with pytest.raises(ValueError, match="C and C.."):
        Request(Language.PYTHON, "", files={"a.c": b""}, sources=("a.c",))
    with pytest.raises(ValueError, match="leave the workspace"):
        Request(Language.C, "", files={"../a.c": b""})


# ---- the kernel's cell grammar -----------------------------------------------------------

def test_file_cells_parse_with_the_shared_grammar():
    cell = parse_cell("%%file -a cases/1.in\n1 2\n3", Language.C)
    assert (cell.file.name, cell.file.append, cell.code) == ("cases/1.in", True, "1 2\n3\n")
    assert parse_cell("%%dcodex file x.h\nint x;", Language.C).file.name == "x.h"
    assert parse_cell("%dcodex files", Language.C).files
    with pytest.raises(OptionError):
        parse_cell("%%file\nno name", Language.C)
    ns = parse_cell("%%dcodex c --sources a.c,b/c.c --sources d.c\nint main(){}", Language.C).options
    from dcodex_kernel.options import sources_from
    assert sources_from(ns) == ("a.c", "b/c.c", "d.c")


# ---- a real kernel -----------------------------------------------------------------------

def test_kernel_file_include_sources_and_shutdown_removes_it(tmp_path):
    km, kc = start_kernel("dcodex-c", env={"XDG_RUNTIME_DIR": str(tmp_path)})
    try:
        assert execute(kc, "%dcodex files").text().startswith("The session workspace is empty")
        run = execute(kc, "%%file twice.h\n" + TWICE_H)
        assert run.status == "ok" and "Wrote twice.h" in run.text()
        [workspace] = [p for p in tmp_path.iterdir() if p.name.startswith("dcodex-workspace-")]
        assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
        assert execute(kc, "%%file twice.c\n" + TWICE_C).status == "ok"
        run = execute(kc, "%%dcodex c --sources twice.c\n" + MAIN_C)
        assert (run.status, run.text("stdout")) == ("ok", "42\n"), run.outputs
        run = execute(kc, MAIN_C)  # without --sources: twice() is not linked
        assert run.status == "error" and "twice" in run.errors[0]["traceback"][0] + str(run.errors)
        listing = execute(kc, "%dcodex files").text()
        assert "twice.h" in listing and "twice.c" in listing
        run = execute(kc, "%%file ../escape.h\nx")
        assert run.status == "error" and "leave the workspace" in run.errors[0]["evalue"]
        assert not (tmp_path / "escape.h").exists()
        assert execute(kc, '%%file data.txt\nfrom the workspace').status == "ok"
        run = execute(kc, '%%dcodex python\nprint(open("data.txt").read(), end="")')
        assert run.text("stdout") == "from the workspace\n", run.outputs
    finally:
        stop_kernel(km, kc)
    assert not workspace.exists()


# ---- the magics --------------------------------------------------------------------------

@pytest.fixture
def ip(engine):
    shell = ipython_shell()
    shell.run_line_magic("load_ext", "dcodex_kernel")
    magics = shell.magics_manager.registry["DCodeXMagics"]
    magics.backend = engine
    yield shell
    magics.workspace.close()
    shell.run_line_magic("unload_ext", "dcodex_kernel")


def test_magics_file_include_and_listing(ip, capsys):
    ip.run_cell_magic("dcodex", "file twice.h", TWICE_H)
    ip.run_cell_magic("dcodex", "file -a twice.h", "int thrice(int x);")
    ip.run_cell_magic("dcodex", "file twice.c", TWICE_C)
    assert "Appended to twice.h" in capsys.readouterr().out
    result = ip.run_cell_magic("dcodex", "c --sources twice.c --quiet --out r", MAIN_C)
    assert capsys.readouterr().out == "42\n" and ip.user_ns["r"].ok
    ip.run_line_magic("dcodex", "files")
    listing = capsys.readouterr().out
    assert "twice.h" in listing and "twice.c" in listing
    ip.run_cell_magic("dcodex", "file data.csv", "1,2,3")
    ip.run_cell_magic("dcodex", "python --quiet", 'print(sum(map(int, open("data.csv").read().split(","))))')
    assert capsys.readouterr().out.endswith("6\n")
    from IPython.core.error import UsageError
    with pytest.raises(UsageError, match="absolute"):
        ip.run_cell_magic("dcodex", "file /tmp/x", "no")
    path = ip.magics_manager.registry["DCodeXMagics"].workspace.path
    assert path and not path.startswith(os.getcwd() + os.sep)
    assert result is None


# ---- dcodex run --------------------------------------------------------------------------

def test_cli_gives_files_of_the_programs_directory(tmp_path):
    (tmp_path / "twice.h").write_text(TWICE_H)
    (tmp_path / "twice.c").write_text(TWICE_C)
    (tmp_path / "main.c").write_text(MAIN_C)
    cmd = [sys.executable, "-m", "dcodex_kernel", "run", str(tmp_path / "main.c")]
    run = subprocess.run([*cmd, "--file", "twice.h", "--sources", "twice.c"],
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout) == (0, "42\n"), run.stderr
    os.symlink("/etc/passwd", tmp_path / "link.h")
    run = subprocess.run([*cmd, "--file", "link.h"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "link" in run.stderr


# ---- the engine as an ordinary user (user namespace, no per-run uid) ------------------------

_USER_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.events import collect
from dcodex_kernel.request import Language, Request
files = json.loads(sys.argv[2])
files = {name: text.encode() for name, text in files.items()}
code = sys.argv[3]
r = collect(LocalBackend().execute(Request(Language.C, code, files=files, sources=("lib/twice.c",))))
print(json.dumps({"status": r.status.value, "stdout": r.stdout, "message": r.message}))
"""


def test_workspace_files_as_an_ordinary_user(tmp_path):
    import json
    import shutil
    import tempfile

    from .support import ordinary_user

    if os.geteuid() != 0:
        pytest.skip("this suite already runs as an ordinary user: the engine tests above are this check")
    user = ordinary_user("dcodex-hostile")
    code_dir = tempfile.mkdtemp(prefix="dcodex-ws-code-")
    try:
        os.chmod(code_dir, 0o755)
        shutil.copytree(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "dcodex_kernel"), os.path.join(code_dir, "dcodex_kernel"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        home = tempfile.mkdtemp(prefix="dcodex-ws-home-")
        os.chown(home, user.pw_uid, user.pw_gid)
        files = {"twice.h": TWICE_H, "lib/twice.c": TWICE_C.replace('"twice.h"', '"../twice.h"'),
                 "data/x.txt": "data\n"}
        code = MAIN_C.replace('printf("%d\\n", twice(21));',
                              'char b[16]; fgets(b, 16, fopen("data/x.txt", "r")); printf("%d %s", twice(21), b);')
        proc = subprocess.run(["/usr/bin/python3", "-c", _USER_SCRIPT, code_dir, json.dumps(files), code],
                              capture_output=True, text=True, timeout=300, cwd="/",
                              env={"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                              user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.splitlines()[-1])
        assert (out["status"], out["stdout"]) == ("ok", "42 data\n"), out
    finally:
        shutil.rmtree(code_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


# ---- the server: per-session workspaces ---------------------------------------------------

LIST_PY = 'import os\nfor top, _, names in os.walk("."):\n    print(*sorted(os.path.join(top, n)[2:] for n in names))'


def _sessions_root(runtime_dir) -> str:
    [root] = [p for p in os.listdir(runtime_dir) if p.startswith("dcodex-serve-sessions-")]
    return os.path.join(runtime_dir, root)


def test_server_sessions_see_only_their_own_files(tmp_path):
    import grpc

    from dcodex_kernel.backends.remote import RemoteBackend
    from dcodex_kernel.proto import dcodex_pb2 as pb
    from dcodex_kernel.proto import dcodex_pb2_grpc as pb_grpc
    from .test_server import Served

    (tmp_path / "tokens").write_text("token-a\ntoken-b\n")
    server = Served("--token-file", str(tmp_path / "tokens"), env={"XDG_RUNTIME_DIR": str(tmp_path)})
    try:
        a = RemoteBackend(server.address, token="token-a")
        b = RemoteBackend(server.address, token="token-b")
        mine = collect(a.execute(Request(Language.PYTHON, LIST_PY, files={"secret.txt": b"A's"})))
        assert (mine.status, mine.stdout) == (Status.OK, "main.py secret.txt\n"), mine
        theirs = collect(b.execute(Request(Language.PYTHON, LIST_PY, files={"b.txt": b"B's"})))
        assert theirs.stdout == "b.txt main.py\n", theirs
        # A's session id, guessed by B: the server scopes ids to the token, so B gets a session
        # of its own (empty); the same request with A's token sees A's file.
        read = 'import os; print(open("secret.txt").read() if os.path.exists("secret.txt") else "none")'
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.CodeExecutorStub(channel)

            def run_as(token):
                logs = list(stub.Execute(pb.CodeRequest(language="python", code=read, session=a.session_id),
                                         metadata=(("authorization", f"Bearer {token}"),)))
                return "".join(log.stdout_chunk for log in logs)

            assert run_as("token-b") == "none\n"
            assert run_as("token-a") == "A's\n"
        root = _sessions_root(tmp_path)
        for ws in os.listdir(root):
            assert stat.S_IMODE(os.stat(os.path.join(root, ws)).st_mode) == 0o700
        a.close()
        b.close()
    finally:
        assert server.stop() == 0
    assert not os.path.exists(root)  # the server's workspaces go with it


def test_server_session_quota_and_ttl(tmp_path):
    from dcodex_kernel.backends.remote import RemoteBackend
    from .test_server import Served

    server = Served("--session-quota", "1M", "--session-ttl", "1",
                    env={"XDG_RUNTIME_DIR": str(tmp_path)})
    try:
        client = RemoteBackend(server.address)
        files = {"a.bin": b"a" * (600 << 10)}
        ok = collect(client.execute(Request(Language.PYTHON, "import os; print(os.path.getsize('a.bin'))", files=files)))
        assert (ok.status, ok.stdout) == (Status.OK, f"{600 << 10}\n"), ok
        over = collect(client.execute(Request(Language.PYTHON, "print(1)",
                                              files={**files, "b.bin": b"b" * (600 << 10)})))
        assert over.status is Status.REJECTED and "quota" in over.message, over
        # Used again within the TTL it is kept; idle past it, the workspace is deleted...
        small = {"n.txt": b"7\n"}
        assert collect(client.execute(Request(Language.PYTHON, "print(open('n.txt').read(), end='')",
                                              files=small))).stdout == "7\n"
        root = _sessions_root(tmp_path)
        assert os.listdir(root)
        wait_until(lambda: not os.listdir(root), timeout=5)
        # ...and the client, told the server's copy is stale, sends it again: the run still works.
        again = collect(client.execute(Request(Language.PYTHON, "print(open('n.txt').read(), end='')",
                                               files=small)))
        assert (again.status, again.stdout) == (Status.OK, "7\n"), again
        client.close()
    finally:
        assert server.stop() == 0


def test_server_runs_one_sessions_requests_in_order_and_sessions_in_parallel(tmp_path):
    import threading
    import time

    from dcodex_kernel.backends.remote import RemoteBackend
    from .test_server import Served

    server = Served("--max-concurrent", "4")
    slow = "import time; t = time.time(); time.sleep(1.5); print(t, time.time())"
    quick = "import time; t = time.time(); print(t, t)"
    files = {"x.txt": b"x"}
    try:
        a, b = RemoteBackend(server.address), RemoteBackend(server.address)
        collect(a.execute(Request(Language.PYTHON, "pass", files=files)))  # sessions made, files sent
        collect(b.execute(Request(Language.PYTHON, "pass", files=files)))
        spans = {}

        def run(name, backend, code):
            result = collect(backend.execute(Request(Language.PYTHON, code, files=files,
                                                     limits=Limits(wall_s=10), cache=False)))
            assert result.status is Status.OK, result
            spans[name] = tuple(map(float, result.stdout.split()))

        threads = [threading.Thread(target=run, args=("a1", a, slow))]
        threads[0].start()
        time.sleep(0.3)
        threads += [threading.Thread(target=run, args=("a2", a, quick)),
                    threading.Thread(target=run, args=("b1", b, quick))]
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join(60)
        assert spans["a2"][0] >= spans["a1"][1], spans  # A's second run waited for its first
        assert spans["b1"][0] < spans["a1"][1], spans  # B's run did not wait for A's
        a.close()
        b.close()
    finally:
        assert server.stop() == 0


@pytest.mark.usefixtures("no_leftovers")
def test_every_test_case_run_gets_the_files(engine):
    from dcodex_kernel.verdicts import Case

    code = '#include <stdio.h>\n#include "k.h"\nint main(void) { int x; scanf("%d", &x); printf("%d\\n", K * x); }\n'
    result = collect(engine.execute(Request(Language.C, code, files={"k.h": b"#define K 3\n"},
                                            cases=(Case("1", b"2\n", b"6\n"), Case("2", b"5\n", b"15\n")))))
    assert result.status is Status.OK and all(c.accepted for c in result.cases), result


@pytest.mark.usefixtures("no_leftovers")
def test_unconfined_run_never_copies_files_through_a_link_the_compiler_left(unconfined, tmp_path):
    """Without a confined filesystem the compile and run steps share a host dir: a hostile
    compile (a -wrapper) that swaps a workspace subdirectory for a link to a host dir must not
    get the run step's copy of the files written there."""
    target = tmp_path / "host-dir"
    target.mkdir()
    os.chmod(target, 0o777)  # writable by the run's uid: only not following the link protects it
    swap = f'rm -rf data; ln -s {target} data; exec "$0" "$@"'
    request = Request(Language.C, "int main(void) { return 0; }\n", files={"data/in.txt": b"x"},
                      cflags=("-wrapper", f"/bin/sh,-c,{swap}"), cache=False)
    result = collect(unconfined.execute(request))
    assert result.status is not Status.OK, result
    assert list(target.iterdir()) == []


def test_a_killed_sessions_workspace_is_removed_by_the_next_one(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now runs nothing (reused only after the pid space wraps)
    orphan = tmp_path / f"dcodex-workspace-{dead.pid}-abc"
    orphan.mkdir()
    (orphan / "left.h").write_text("x")
    alive = tmp_path / f"dcodex-workspace-{os.getppid()}-def"  # a live process's: kept
    alive.mkdir()
    other = tmp_path / "dcodex-workspace-notes"  # not one of ours by name: kept
    other.mkdir()
    ws = Workspace(str(tmp_path))
    ws.write("a.h", b"")
    assert not orphan.exists() and alive.exists() and other.exists()
    ws.close()


def test_kernel_workspace_through_a_server(tmp_path):
    from .test_server import Served

    server = Served(env={"XDG_RUNTIME_DIR": str(tmp_path)})
    km, kc = start_kernel("dcodex-c", env={"DCODEX_SERVER": server.address})
    try:
        assert execute(kc, "%%file twice.h\n" + TWICE_H).status == "ok"
        assert execute(kc, "%%file twice.c\n" + TWICE_C).status == "ok"
        run = execute(kc, "%%dcodex c --sources twice.c\n" + MAIN_C)
        assert (run.status, run.text("stdout")) == ("ok", "42\n"), run.outputs
        [session] = os.listdir(_sessions_root(tmp_path))  # the server holds the kernel's files
        assert sorted(os.listdir(os.path.join(_sessions_root(tmp_path), session))) == ["twice.c", "twice.h"]
    finally:
        stop_kernel(km, kc)
        assert server.stop() == 0
