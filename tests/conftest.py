"""Fixtures shared by the test suite: a backend with its own build cache, a bound on the number
of processes a hostile test may create, and checks that a run leaves nothing behind."""

from __future__ import annotations

import os
import time

import pytest

from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.sandbox import isolation

from .kernel_support import shared_pch_store, start_kernel, stop_kernel
from .support import PIDS_ROOT, PidsCgroup, end_prestarted, ipython_shell, name_of, run_dirs, wait_until_clean


@pytest.fixture(scope="session")
def backend(tmp_path_factory) -> LocalBackend:
    """The engine with a build cache of its own and the C++ headers precompiled up front (where
    the filesystem is confined), in the store the test kernels use too: a precompile in the
    background would otherwise outlive the test that started it and count as its leftover."""
    engine = LocalBackend(BuildCache(tmp_path_factory.mktemp("build-cache")), pch=shared_pch_store())
    engine.precompile_headers()
    return engine


@pytest.fixture
def no_leftovers():
    """Assert after the test that no process, temp dir or file descriptor of a run survived."""
    isolation.detect()  # opens the engine's one network-namespace fd, held for its lifetime
    before_dirs = run_dirs()
    before_fds = set(os.listdir("/proc/self/fd"))
    since = time.time()
    yield
    # Sandboxes made ahead of need are the engine's, not a run's: ended here, so that what
    # is left is exactly what runs left (and the pool gives back all it held).
    end_prestarted()
    procs, dirs = wait_until_clean(before_dirs, since)
    assert not procs, f"processes left behind: {[(p.pid, name_of(p)) for p in procs]}"
    assert not dirs, f"run directories left behind: {dirs}"
    leaked = set(os.listdir("/proc/self/fd")) - before_fds
    leaked = {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not leaked, f"file descriptors leaked: {[os.readlink(f'/proc/self/fd/{fd}') for fd in leaked]}"


@pytest.fixture
def pids_cgroup():
    """A PidsCgroup capped at 400 tasks around one hostile test; skipped, with the reason, where
    none can be made (the test would run unbounded)."""
    if not PidsCgroup.available():
        pytest.skip(f"cannot create a pids cgroup ({PIDS_ROOT} not writable): hostile test not run unbounded")
    cgroup = PidsCgroup("dcodex-test", 400)
    try:
        yield cgroup
    finally:
        cgroup.close()


@pytest.fixture(scope="module")
def kernels():
    """kernels(name) → (KernelManager, client) of a DCodeX kernel, started on first use and
    shared by the module's tests."""
    started = {}

    def get(name):
        if name not in started:
            started[name] = start_kernel(name)
        return started[name]

    yield get
    for km, kc in started.values():
        stop_kernel(km, kc)


@pytest.fixture(scope="module")
def ip(backend):
    """An IPython shell with the extension loaded and the real engine, with the test session's
    own build cache instead of the user's."""
    shell = ipython_shell()
    shell.run_line_magic("load_ext", "dcodex_kernel")
    shell.magics_manager.registry["DCodeXMagics"].backend = backend
    yield shell
    shell.run_line_magic("unload_ext", "dcodex_kernel")
