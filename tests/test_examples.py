"""Every program in examples/ runs through the real engine (gcc, g++, python) with the options its
header records, and ends as the header says; afterwards nothing of any run is left.

An example opens with comment lines such as

    // expect: memory_limit          (a Status value; required)
    // options: --memory 64M         (the %%dcodex / `dcodex run` option grammar)
    // stdout: allocated             (text the program's stdout must contain; repeatable)
    // message: Memory limit         (text the one-line result message must contain; repeatable)

(`#` instead of `//` in Python).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.events import Status, collect
from dcodex_kernel.options import parse_header, request_from
from dcodex_kernel.request import Language, Limits

from .support import PidsCgroup, alive, end_prestarted, run_dirs, wait_until, wait_until_clean

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LANGUAGE_DIRS = {"c": ".c", "cpp": ".cpp", "python": ".py"}
HEADER_LINE = re.compile(r"^(?://|#)\s*(expect|options|stdout|message):\s?(.*?)\s*$")
# Programs that would harm the machine if the sandbox failed: they only run inside the pids cgroup.
HOSTILE = {"fork_bomb", "daemon"}
# Behaviours every language must show (the examples' reason to exist; a deleted one fails here).
REQUIRED = {"hello", "stdin_sum", "infinite_loop", "sleep_forever", "memory_exhaustion",
            "output_flood", "segfault", "daemon", "fork_bomb"}
CGROUP_CAP = 300  # tasks: several fork bombs' worth (64 each by default), far below pid_max


@dataclass
class Example:
    path: Path
    expect: Status
    options: str = ""
    stdout: list[str] = field(default_factory=list)
    message: list[str] = field(default_factory=list)

    @property
    def language(self) -> Language:
        return Language.parse(self.path.suffix[1:])

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def load(path: Path) -> Example:
    """Read the header: the leading run of comment lines."""
    comment = "#" if path.suffix == ".py" else "//"
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith(comment):
            break
        m = HEADER_LINE.match(line)
        if m:
            found.setdefault(m.group(1), []).append(m.group(2))
    assert len(found.get("expect", [])) == 1, f"{path}: needs exactly one 'expect:' line"
    assert len(found.get("options", [])) <= 1, f"{path}: at most one 'options:' line"
    return Example(path, Status(found["expect"][0]), (found.get("options") or [""])[0],
                   found.get("stdout", []), found.get("message", []))


def example_files() -> list[Path]:
    return sorted(p for d, ext in LANGUAGE_DIRS.items() for p in (EXAMPLES / d).glob(f"*{ext}"))


ALL = [load(p) for p in example_files()]


# ---------------------------------------------------------------- containment and leftovers

class Containment:
    """Where this module's runs live: a PidsCgroup this test process sits in (as root), so the
    runs' processes can be listed and counted; otherwise our descendants."""

    def __init__(self, cgroup: PidsCgroup | None):
        self.cgroup = cgroup

    def run_processes(self) -> list[psutil.Process]:
        if self.cgroup is None:
            return psutil.Process().children(recursive=True)
        return self.cgroup.processes()

    def wait_for_no_processes(self, timeout: float = 3.0) -> list[psutil.Process]:
        end_prestarted()
        wait_until(lambda: not [p for p in self.run_processes() if alive(p)], timeout)
        return [p for p in self.run_processes() if alive(p)]

    def cap_hits(self) -> int:
        return self.cgroup.cap_hits() if self.cgroup else 0


def _describe(procs) -> list:
    out = []
    for p in procs:
        try:
            out.append((p.pid, p.uids().real, " ".join(p.cmdline())))
        except psutil.Error:
            out.append((p.pid, "?", "?"))
    return out


@pytest.fixture(scope="module")
def containment():
    """Put this test process into a fresh pids cgroup for the whole module (root only); after the
    module, check that no process and no temp dir of any run is left, then remove the cgroup."""
    dirs_before = run_dirs()
    since = time.time()
    cgroup = PidsCgroup("dcodex-examples", CGROUP_CAP) if PidsCgroup.available() else None
    c = Containment(cgroup)
    try:
        yield c
    finally:
        left, stray = wait_until_clean(dirs_before, since, timeout=15)
        left += c.wait_for_no_processes()
        if cgroup is not None:
            cgroup.close()
    assert not left, f"processes of runs left after the examples: {_describe(left)}"
    assert not stray, f"run directories left after the examples: {stray}"


@pytest.fixture(scope="module")
def engine() -> LocalBackend:
    return LocalBackend()  # the user's build cache, as `dcodex run` uses it


# ---------------------------------------------------------------- the examples

def test_examples_exist_for_every_behaviour():
    names = {(e.path.parent.name, e.path.stem) for e in ALL}
    missing = sorted((lang, stem) for lang in LANGUAGE_DIRS for stem in REQUIRED if (lang, stem) not in names)
    assert not missing, f"examples missing: {missing}"


@pytest.mark.parametrize("example", ALL, ids=lambda e: e.name)
def test_example(example: Example, engine: LocalBackend, containment: Containment):
    if example.path.stem in HOSTILE and containment.cgroup is None:
        pytest.skip("needs root to create a pids cgroup that bounds it should the sandbox fail "
                    "(/sys/fs/cgroup/pids not writable); not run unbounded")
    ns = parse_header(example.options)
    assert ns.language is None, f"{example.name}: options name a language"
    request = request_from(ns, code=example.path.read_text(encoding="utf-8"),
                           language=example.language, base=Limits())

    # While the program runs (at its first output), note its working directory: the run's
    # temp dir, which must be gone once the Result is out.
    seen_dirs: set[str] = set()

    def note_run_dir(event):
        if event.phase == "run" and not seen_dirs:
            for p in containment.run_processes():
                try:
                    cwd = p.cwd()
                except psutil.Error:
                    continue
                # The host-side run dir, or /box: the run's own tmpfs, seen from inside it.
                if os.path.basename(cwd).startswith("dcodex-run-") or cwd == "/box":
                    seen_dirs.add(cwd)

    hits_before = containment.cap_hits()
    result = collect(engine.execute(request), on_output=note_run_dir)
    where = f"{example.name}: {result.status.value} ({result.message!r})\nstdout: " \
            f"{result.stdout[:500]!r}\nstderr: {result.stderr[:500]!r}"

    assert result.status is example.expect, where
    for text in example.stdout:
        assert text in result.stdout, where
    for text in example.message:
        assert text in result.message, where
    if result.ok:
        assert result.message == "", where
    else:
        assert result.message.strip() and "\n" not in result.message, where

    # What each status promises beyond its name.
    limits = request.limits
    if result.status is Status.OUTPUT_LIMIT:
        assert result.truncated
        program_output = (result.stdout + result.stderr).encode()
        assert len(program_output) <= limits.output + 200, "more than the cap (plus a marker) delivered"
    elif result.status is Status.TIME_LIMIT:
        assert result.cpu_s >= 0.9 * limits.cpu_s, where
    elif result.status is Status.WALL_TIMEOUT:
        assert limits.wall_s <= result.wall_s < limits.wall_s + 3, where
        assert seen_dirs, "a sleeping program's run directory was not seen while it ran"
    elif result.status is Status.SIGNALED:
        assert result.signal is not None, where
    elif result.status is Status.RUNTIME_ERROR:
        assert result.exit_code not in (None, 0), where

    # Nothing of this run is left: no process (the daemon and the fork bomb's sleepers included),
    # not its directory; and a fork bomb was stopped by the sandbox, not by our safety cgroup.
    left = containment.wait_for_no_processes()
    assert not left, f"{example.name}: processes left after the run: {_describe(left)}"
    assert not [d for d in seen_dirs if os.path.exists(d)], f"{example.name}: run dir left: {seen_dirs}"
    assert containment.cap_hits() == hits_before, \
        f"{example.name}: hit the test's pids cgroup cap of {CGROUP_CAP}: the sandbox's process limit did not hold"


# ---------------------------------------------------------------- the README

def test_readme_lists_every_example_with_its_status_and_command():
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3:
            rows[cells[0]] = cells
    problems = []
    for e in ALL:
        row = rows.get(e.name)
        if row is None:
            problems.append(f"{e.name}: not in examples/README.md")
        else:
            if e.expect.value not in row:
                problems.append(f"{e.name}: README says {row[2:]} but the file expects {e.expect.value}")
            command = f"dcodex run examples/{e.name} {e.options}".strip()
            if command not in row:
                problems.append(f"{e.name}: README command is not `{command}`")
    listed = {name for name in rows if "/" in name}
    problems += [f"{name}: in the README but no such example" for name in listed - {e.name for e in ALL}]
    assert not problems, "\n".join(problems)
