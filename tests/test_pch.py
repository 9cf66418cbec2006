"""Precompiled C++ headers: used when a program starts with one, never changing what it does or
what the compiler says about it, one per compiler and flags."""

from __future__ import annotations

import logging
import os
import re

import pytest

from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.events import Output, Status
from dcodex_kernel.pch import HEADERS, PchStore, only_own_diagnostics, wanted_header
from dcodex_kernel.request import Language, Request
from dcodex_kernel.sandbox import isolation

pytestmark = [
    pytest.mark.usefixtures("no_leftovers"),
    pytest.mark.skipif(not isolation.detect().filesystem,
                       reason="precompiled headers need a confined filesystem (none on this machine)"),
]

USED = "with the precompiled"
AGAIN = "again without the precompiled"

# Programs whose output and diagnostics must read the same with and without a .gch.
PROGRAMS = {
    "sorts": "#include <bits/stdc++.h>\nusing namespace std;\n"
             "int main() { vector<int> v{3, 1, 2}; sort(v.begin(), v.end());\n"
             "  for (int x : v) cout << x << ' '; cout << endl; }\n",
    "own_warnings": "#include <bits/stdc++.h>\nint main() { int unused; int x; std::cout << x; }\n",
    "own_error": "#include <iostream>\nint main() { std::cout << undeclared; }\n",
    "error_in_the_library": "#include <bits/stdc++.h>\n"
                            "int main() { std::vector<int> v; v.push_back(\"x\"); std::sort(v); }\n",
    "iostream_hello": "#include <iostream>\nint main() { std::cout << \"hello\" << std::endl; }\n",
    "not_first": "#include <cstdio>\n#include <iostream>\nint main() { std::cout << \"second\\n\"; }\n",
    # A macro the header looks at: GCC refuses the .gch and reads the real header (debug mode).
    "debug_mode": "#define _GLIBCXX_DEBUG\n#include <bits/stdc++.h>\n"
                  "int main() { std::vector<int> v(2); return v[5]; }\n",
}


def compile_run(backend, code, caplog, **fields):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="dcodex_kernel.backends.local"):
        events = list(backend.execute(Request(Language.CPP, code, cache=False, **fields)))
    said = "".join(e.text for e in events if isinstance(e, Output) and e.phase == "compile")
    out = "".join(e.text for e in events if isinstance(e, Output) and e.phase == "run")
    result = events[-1]
    return (result.status, result.exit_code, result.signal, said, out), caplog.text


@pytest.fixture(scope="module")
def without(tmp_path_factory) -> LocalBackend:
    return LocalBackend(BuildCache(tmp_path_factory.mktemp("plain")), pch=PchStore(enabled=False))


@pytest.mark.parametrize("name", PROGRAMS)
def test_same_output_and_diagnostics_as_without(backend, without, caplog, name):
    code = PROGRAMS[name]
    with_pch, log = compile_run(backend, code, caplog)
    plain, _ = compile_run(without, code, caplog)
    assert _no_addresses(with_pch) == _no_addresses(plain)
    if name in ("sorts", "own_warnings", "own_error", "iostream_hello"):
        assert USED in log and AGAIN not in log, log  # said only about main.cpp: kept
    if name == "error_in_the_library":
        assert AGAIN in log, log  # its include chain would read differently: compiled again
    if name == "debug_mode":  # the checking operator[] of debug mode aborts, in both
        assert with_pch[0] is Status.SIGNALED and "out-of-bounds index 5" in with_pch[4]


def _no_addresses(outcome):
    return tuple(re.sub(r"0x[0-9a-f]+", "0x…", part) if isinstance(part, str) else part
                 for part in outcome)


def test_the_first_program_builds_it_for_the_next(tmp_path, caplog):
    engine = LocalBackend(BuildCache(tmp_path / "builds"))
    assert engine.pch.root == tmp_path / "pch"
    first, log = compile_run(engine, PROGRAMS["iostream_hello"], caplog)
    assert first[0] is Status.OK and USED not in log
    engine.pch.wait_idle()
    entries = [p for p in (tmp_path / "pch").iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "iostream.gch").stat().st_size > 1 << 20
    assert oct((entries[0] / "iostream.gch").stat().st_mode & 0o777) == "0o644"
    assert not [n for n in os.listdir(entries[0]) if n.startswith(".tmp")]
    second, log = compile_run(engine, PROGRAMS["iostream_hello"], caplog)
    assert second == first and USED in log


def test_different_flags_never_share_one(tmp_path, caplog):
    engine = LocalBackend(BuildCache(tmp_path / "builds"))
    for std in ("-std=c++17", "-std=gnu++20"):
        compile_run(engine, PROGRAMS["iostream_hello"], caplog, cflags=(std,))
        engine.pch.wait_idle()
    entries = sorted(p.name for p in (tmp_path / "pch").iterdir() if p.is_dir())
    assert len(entries) == 2
    # Each flag set finds its own and uses it.
    for std in ("-std=c++17", "-std=gnu++20"):
        _, log = compile_run(engine, PROGRAMS["iostream_hello"], caplog, cflags=(std,))
        assert USED in log


def test_unusual_flags_do_not_build_one(tmp_path, caplog):
    engine = LocalBackend(BuildCache(tmp_path / "builds"))
    outcome, _ = compile_run(engine, PROGRAMS["iostream_hello"], caplog, cflags=("-DX=1",))
    engine.pch.wait_idle()
    assert outcome[0] is Status.OK
    assert not (tmp_path / "pch").exists() or not any((tmp_path / "pch").iterdir())


def test_the_program_never_sees_the_store(backend, caplog):
    code = ("#include <iostream>\n#include <unistd.h>\n"
            "int main() { std::cout << access(\"/pch\", F_OK) << std::endl; }\n")
    outcome, log = compile_run(backend, code, caplog)
    assert USED in log and outcome[0] is Status.OK and outcome[4] == "-1\n"


def test_off_by_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DCODEX_PCH", "0")
    assert not PchStore(tmp_path).enabled
    assert LocalBackend(BuildCache(tmp_path / "b")).describe()["precompiled_headers"] == "off (DCODEX_PCH=0)"


def test_which_programs_and_diagnostics_qualify():
    assert wanted_header("// a comment\n#include <bits/stdc++.h>\n") == "bits/stdc++.h"
    assert wanted_header("#  include \"iostream\"\n") == "iostream"
    assert wanted_header("#include <vector>\n#include <iostream>\n") is None
    assert wanted_header("int main() {}\n") is None
    assert set(HEADERS) == {"bits/stdc++.h", "iostream"}
    own = "main.cpp: In function 'int main()':\nmain.cpp:2:5: warning: x\n    2 | int x;\n      |     ^\n"
    assert only_own_diagnostics(own, ("main.cpp",))
    assert not only_own_diagnostics("In file included from /usr/include/c++/12/vector:1,\n" + own,
                                    ("main.cpp",))
    assert not only_own_diagnostics("/usr/bin/ld: undefined reference\n", ("main.cpp",))


def test_dcodex_run_finishes_a_first_build_and_says_so(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "hello.cpp"
    src.write_text(PROGRAMS["iostream_hello"])
    env = {**os.environ, "DCODEX_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "dcodex_kernel", "run", str(src)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout == "hello\n", run.stderr
    assert "precompiling <iostream> for later programs" in run.stderr
    assert list((tmp_path / "cache" / "pch").glob("*/iostream.gch"))
    doctor = subprocess.run([sys.executable, "-m", "dcodex_kernel", "doctor"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert f"in {tmp_path / 'cache' / 'pch'}" in doctor.stdout, doctor.stdout
