"""Run hostile cases through a real LocalBackend in *this* process's engine mode (root, or the
ordinary user it was started as) and print one JSON line per case.

Started by test_hostile.py as `python runner.py` (root) or through `runuser` with the system
interpreter (an ordinary user: it cannot reach root's venv). Reads {"cases": [...]} on stdin;
each case is {name, language, code, options}. Stdlib and dcodex_kernel only.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from dcodex_kernel.backends.local import LocalBackend  # noqa: E402
from dcodex_kernel.events import collect  # noqa: E402
from dcodex_kernel.options import OptionError, parse_header, request_from  # noqa: E402
from dcodex_kernel.request import Language, Limits  # noqa: E402
from dcodex_kernel.sandbox import isolation, pool  # noqa: E402


def open_fds() -> set[str]:
    """This engine's open fds, less those its pool of pre-started sandboxes holds between runs."""
    pool.the_pool().wait_idle()
    held = {str(fd) for fd in pool.the_pool().held_fds()}
    return {fd for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")} - held


def main() -> None:
    spec = json.load(sys.stdin)
    backend = LocalBackend()
    caps = isolation.detect()  # holds its network-namespace fd for the engine's life
    print(json.dumps({"engine": {"uid": os.getuid(), "isolation": list(caps.layers()),
                                 "prestart": caps.prestart,
                                 "launcher": os.path.realpath(__import__(
                                     "dcodex_kernel.sandbox.launcher", fromlist=["x"]).launcher_path()),
                                 "cache": str(backend.cache.root),
                                 # built in the sandbox as this engine's user, then used by
                                 # every case that starts with one of the headers
                                 "precompiled": backend.precompile_headers()
                                 if spec.get("precompile") else []}}), flush=True)
    for case in spec["cases"]:
        before = open_fds()
        served = pool.the_pool().served
        started = time.monotonic()
        try:
            ns = parse_header(case["options"])
            request = request_from(ns, code=case["code"], language=Language.parse(case["language"]),
                                   base=Limits())
            result = collect(backend.execute(request))
            out = result.to_dict()
            out.update(stdout=result.stdout, stderr=result.stderr)
        except OptionError as e:
            out = {"status": "option_error", "message": str(e), "stdout": "", "stderr": ""}
        out["elapsed"] = time.monotonic() - started
        out["leaked_fds"] = sorted(open_fds() - before)
        out["prestarted"] = pool.the_pool().served - served  # its runs that used a ready sandbox
        out["name"] = case["name"]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
