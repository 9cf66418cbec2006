"""The `dcodex` command: run a file in the sandbox, show what the sandbox can do."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from . import __version__, case_table
from .backends import get_backend
from .backends.local import LocalBackend
from .cancel import CancelToken
from .info import describe
from .events import InputRequest, Phase, Result, Status
from .feedback import terminal_progress
from .interactive import StdinFeed
from .options import (OptionError, add_run_options, add_server_options, backend_options,
                      join_flag_values, parse_words, request_from, sources_from, stdin_given)
from .request import Language, Limits, Request
from .workspace import read_files


# Exit codes of `dcodex run`: the program's own code when it ran to an exit, else one per outcome.
EXIT_CODES = {
    Status.COMPILE_ERROR: 65, Status.TIME_LIMIT: 124, Status.WALL_TIMEOUT: 124,
    Status.MEMORY_LIMIT: 137, Status.OUTPUT_LIMIT: 141, Status.CANCELLED: 130,
    Status.REJECTED: 2, Status.INTERNAL_ERROR: 70,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcodex", description="Run C, C++ and Python programs in the DCodeX sandbox.")
    parser.add_argument("--version", action="version", version=f"dcodex-kernel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", help="compile (cached) and run a program file in the sandbox",
        description="Compile (cached) and run FILE in the sandbox. Its output streams to this "
        "terminal; a summary (status, time, memory) goes to stderr. The exit code is the "
        "program's own, or: 65 compile error, 124 time limit, 137 memory limit, 141 output "
        "limit, 130 interrupted, 2 bad request, 70 internal error, 128+N killed by signal N. "
        "With --cases DIR it runs once per test case and prints a table of verdicts; the exit "
        "code is then 0 when every case is accepted, else 1.",
        epilog="Defaults: " + Limits().describe() + ". DCODEX_TIMEOUT, DCODEX_CPU_TIME, "
        "DCODEX_MEMORY, DCODEX_OUTPUT_LIMIT and DCODEX_MAX_PROCESSES change them. Maxima: "
        + Limits.maxima() + "; a larger value is refused.")
    run.add_argument("file", metavar="FILE", help="program source (.c, .cpp/.cc/.cxx, .py)")
    run.add_argument("--lang", help="language, if not clear from FILE's extension (c, cpp, python)")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object (result, stdout, stderr) instead of streaming")
    run.add_argument("--strict", action="store_true", default=None,
                     help="refuse to run unless every sandbox layer (pid and network namespaces, "
                          "the confined filesystem, seccomp) is available here; also DCODEX_STRICT=1")
    run.add_argument("--file", metavar="NAME", action="append", default=[], dest="files",
                     help="give the program this file of FILE's directory (e.g. util.h, "
                          "data/in.txt), as a notebook's %%%%file gives one; repeatable. Files "
                          "named by --sources are given without it")
    add_run_options(run)

    doctor = sub.add_parser("doctor", help="show the backend, the limits and the active isolation layers")
    add_server_options(doctor)

    _add_serve(sub)

    inst = sub.add_parser(
        "install", help="install the Jupyter kernelspecs dcodex-c, dcodex-cpp, dcodex-python",
        description="Install the three DCodeX kernelspecs, started by this Python interpreter. "
        "Default: --sys-prefix inside a virtual environment, else --user.")
    where = inst.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user (~/.local/share/jupyter)")
    where.add_argument("--sys-prefix", action="store_true",
                       help=f"into this Python's prefix ({sys.prefix})")
    where.add_argument("--prefix", metavar="PREFIX", help="into PREFIX/share/jupyter/kernels")
    where.add_argument("--system", action="store_true",
                       help="system-wide (e.g. /usr/local/share/jupyter/kernels)")
    inst.add_argument("--env", metavar="VAR=VALUE", action="append", default=[],
                      help="environment for the kernels, e.g. --env DCODEX_TIMEOUT=30 (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        ns = parse_words(parser, join_flag_values(argv))
    except OptionError as e:
        print(e, file=sys.stderr)
        return 2
    if ns.command == "doctor":
        return _doctor(ns)
    if ns.command == "install":
        return _install(ns)
    if ns.command == "serve":
        return _serve(ns)
    return _run(ns)


def build_request(ns, environ=None) -> Request:
    """The Request `dcodex run` options describe; OptionError, ValueError or OSError (a file that
    cannot be read) for a bad one."""
    language = Language.parse(ns.lang) if ns.lang else Language.of_file(ns.file)
    with open(ns.file, encoding="utf-8") as f:
        code = f.read()
    names = dict.fromkeys([*ns.files, *sources_from(ns)])
    files = read_files(os.path.dirname(os.path.abspath(ns.file)), names)
    return request_from(ns, code=code, language=language, base=Limits.from_env(environ),
                        color=not ns.json and sys.stderr.isatty(), files=files)


def _run(ns) -> int:
    try:
        request = build_request(ns)
        backend = get_backend(strict=ns.strict, **backend_options(ns))
    except (OptionError, ValueError, OSError) as e:
        print(f"dcodex run: {e}", file=sys.stderr)
        return 2

    result = None
    out = {"stdout": [], "stderr": []}
    # A terminal's input goes to the program as it is typed (Ctrl-D ends it), when the options
    # give it no input of their own.
    feed = StdinFeed() if sys.stdin.isatty() and not stdin_given(ns) else None
    if feed is not None:
        threading.Thread(target=_forward_terminal, args=(feed,), name="dcodex-stdin",
                         daemon=True).start()
    with CancelToken() as cancel:
        # Ctrl-C cancels the run (the engine then reports `cancelled`) instead of tearing
        # through it; the program itself is in its own session and never sees the SIGINT.
        previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
        progress = terminal_progress(sys.stderr)
        try:
            for event in backend.execute(request, cancel, feed):
                if isinstance(event, Result):
                    result = event
                elif isinstance(event, InputRequest):  # the prompt is the program's output
                    if ns.json:
                        out["stdout"].append(event.prompt)
                    else:
                        sys.stdout.write(event.prompt)
                        sys.stdout.flush()
                elif isinstance(event, Phase):
                    progress(event)
                elif ns.json:
                    out[event.stream].append(event.text)
                else:
                    progress.stop()  # the terminal's line goes before any other text
                    stream = sys.stdout if event.stream == "stdout" else sys.stderr
                    stream.write(event.text)
                    stream.flush()
        finally:
            progress.stop()
            signal.signal(signal.SIGINT, previous)
    if ns.json:
        doc = result.to_dict()
        doc.update(stdout="".join(out["stdout"]), stderr="".join(out["stderr"]))
        print(json.dumps(doc, indent=2))
    elif result.cases:
        # The table replaces the summary line; a run that did not end in verdicts (interrupted,
        # an engine failure) still says why on stderr.
        print(case_table.text_table(result.cases), end="", flush=True)
        if result.status not in (Status.OK, Status.RUNTIME_ERROR):
            print(result.summary(), file=sys.stderr)
    else:
        print(result.summary(), file=sys.stderr)
    _finish_precompiling(backend)
    return exit_code(result)


def _finish_precompiling(backend) -> None:
    """A header being precompiled in the background (the first time a program needed it)
    would die with this process: let it finish, once, and say why we wait."""
    building = backend.pch.building if isinstance(backend, LocalBackend) else ()
    if building:
        print(f"dcodex: precompiling <{'>, <'.join(building)}> for later programs "
              "(once per compiler and flags; Ctrl-C skips it)", file=sys.stderr, flush=True)
        try:
            backend.pch.wait_idle()
        except KeyboardInterrupt:
            pass


def _forward_terminal(feed: StdinFeed) -> None:
    """Lines typed at the terminal to the program; Ctrl-D (a read of nothing) ends its input.
    A daemon thread: `dcodex run` exits when the run is over, whatever it is reading."""
    while True:
        try:
            data = os.read(sys.stdin.fileno(), 1 << 16)
        except OSError:
            data = b""
        if not data:
            feed.end()
            return
        feed.send(data)


def exit_code(result: Result) -> int:
    """The exit code of `dcodex run`. With test cases: 0 when every case is accepted, 1 when
    some are not (65 compile error, 130 interrupted and 70 internal error as without)."""
    if result.cases and result.status is Status.RUNTIME_ERROR:
        return 1
    if result.status in EXIT_CODES:
        return EXIT_CODES[result.status]
    if result.signal:
        return 128 + result.signal
    return result.exit_code or 0


def _install(ns) -> int:
    from .kernelspec import install

    env = {}
    for item in ns.env:
        var, sep, value = item.partition("=")
        if not sep or not var:
            print(f"dcodex install: --env wants VAR=VALUE, got {item!r}", file=sys.stderr)
            return 2
        env[var] = value
    try:
        Limits.from_env(env)  # a bad limit would otherwise surface only inside every cell
    except ValueError as e:
        print(f"dcodex install: --env {e}", file=sys.stderr)
        return 2
    user, prefix = False, None  # --system: Jupyter's system-wide directory
    if ns.prefix or ns.sys_prefix:
        prefix = ns.prefix or sys.prefix
    elif ns.user:
        user = True
    elif not ns.system:  # default: this venv if we are in one, else the user's own directory
        if sys.prefix != sys.base_prefix:
            prefix = sys.prefix
        else:
            user = True
    try:
        paths = install(user=user, prefix=prefix, env=env)
    except OSError as e:
        print(f"dcodex install: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"Installed kernelspec {os.path.basename(path)} in {path}")
    return 0


def _doctor(ns) -> int:
    try:
        limits = Limits.from_env()
        backend = get_backend(**backend_options(ns))
    except (OptionError, ValueError, OSError) as e:
        print(f"dcodex doctor: {e}", file=sys.stderr)
        return 2
    print(describe(backend, limits))
    return 0


def _add_serve(sub) -> None:
    from .options import _typed
    from .request import parse_seconds, parse_size

    serve = sub.add_parser(
        "serve", help="serve the sandbox over gRPC (the DCodeX protocol)",
        description="Serve the DCodeX gRPC protocol (service dcodex.CodeExecutor, and the standard "
        "health service) over this machine's sandbox. Every request is clamped to the maxima. "
        "DCodeX's flag names are accepted too. SIGTERM drains the runs in flight, then exits.")
    net = serve.add_argument_group("network and security")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; another address needs a token "
                          "and TLS, or --insecure)")
    net.add_argument("--port", type=int, default=50051, help="port (default 50051; 0: any free port)")
    net.add_argument("--health-port", type=int, metavar="PORT",
                     help="also serve the standard health service alone, in plaintext and without "
                          "a token, on this port: for probes that speak neither TLS nor tokens "
                          "(Kubernetes' gRPC probes); it tells only SERVING or NOT_SERVING")
    net.add_argument("--token-file", metavar="PATH",
                     help="clients must send one of the bearer tokens in this file, one a line "
                          "(default: $DCODEX_TOKEN, if set); each token is a client of its own "
                          "for fair scheduling and rate limits")
    net.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    net.add_argument("--tls-key", metavar="PEM", help="... and this private key")
    net.add_argument("--insecure", action="store_true",
                     help="allow a non-loopback --host without token and TLS")
    work = serve.add_argument_group("capacity")
    work.add_argument("--max-concurrent", "--max_concurrent_sandboxes", dest="max_concurrent",
                      type=int, default=10, metavar="N", help="sandboxes at once (default 10)")
    work.add_argument("--queue-length", type=int, default=100, metavar="N",
                      help="requests that may wait for a sandbox; more get RESOURCE_EXHAUSTED "
                           "(default 100)")
    work.add_argument("--result-cache-entries", type=int, default=1000, metavar="N",
                      help="successful runs kept for replay, 1 h each (default 1000; 0: none)")
    work.add_argument("--grace", type=float, default=70.0, metavar="SECONDS",
                      help="on SIGTERM, how long the runs in flight may take (default 70)")
    work.add_argument("--rate-limit", type=float, default=0.0, metavar="RUNS_PER_S",
                      help="runs per second per client (its token, else its connection); "
                           "more get RESOURCE_EXHAUSTED (default: no limit)")
    work.add_argument("--rate-burst", type=int, default=10, metavar="N",
                      help="runs a client may start at once before --rate-limit applies (default 10)")
    work.add_argument("--input-timeout", type=_typed(parse_seconds, "input timeout", "wall_s"),
                      default=300.0, metavar="SECONDS",
                      help="an interactive run (a client answering its program's reads) waiting "
                           "this long for input is stopped; the wait holds a sandbox (default 300)")
    work.add_argument("--session-quota", type=_typed(parse_size, "session quota", "disk"),
                      default=64 << 20, metavar="SIZE",
                      help="room for one client session's workspace files (default and at most "
                           "64M; at most 200 files)")
    work.add_argument("--session-ttl", type=float,
                      default=1800.0, metavar="SECONDS",
                      help="a session's workspace is deleted after this long unused (default 1800)")
    work.add_argument("--max-sessions", type=int, default=1000, metavar="N",
                      help="client sessions kept at once (default 1000)")
    work.add_argument("--strict", action="store_true",
                      help="refuse every run where a sandbox layer is missing")
    work.add_argument("--pin-cpu", type=int, metavar="CPU",
                      help="run the server's own threads on this CPU alone; the programs keep "
                           "every CPU. For a server alone on a small machine or VM: on a 2-core "
                           "VM it took 10-20 %% off the server's CPU time per run (see README)")
    lim = serve.add_argument_group("limits (a request that sets none gets the default)")
    for names, dest, parse, what, name, default in (
        (("--cpu-time", "--sandbox_cpu_time_limit_seconds"), "cpu_s", parse_seconds, "cpu time", "cpu_s", "1 s"),
        (("--timeout", "--sandbox_wall_clock_timeout_seconds"), "wall_s", parse_seconds, "timeout", "wall_s", "2 s"),
        (("--memory", "--sandbox_memory_limit_bytes"), "memory", parse_size, "memory", "memory", "4 GiB"),
        (("--output-limit", "--sandbox_max_output_bytes"), "output", parse_size, "output limit", "output", "10240 B"),
    ):
        lim.add_argument(*names, dest=dest, type=_typed(parse, what, name), metavar="VALUE",
                         help=f"default {what} of a run (default {default})")
    for option, dest, parse, what, name, default in (
        ("--max-cpu-time", "max_cpu_s", parse_seconds, "cpu time", "cpu_s", "60 s"),
        ("--max-timeout", "max_wall_s", parse_seconds, "timeout", "wall_s", "60 s"),
        ("--max-memory", "max_memory", parse_size, "memory", "memory", "4 GiB"),
        ("--max-output-limit", "max_output", parse_size, "output limit", "output", "1 MiB"),
    ):
        lim.add_argument(option, dest=dest, type=_typed(parse, what, name), metavar="VALUE",
                         help=f"the most a request may ask for (default {default})")
    lim.add_argument("--max-code-bytes", type=int, default=1 << 20, metavar="N",
                     help="largest source accepted (default 1 MiB)")
    lim.add_argument("--max-stdin-bytes", type=int, default=8 << 20, metavar="N",
                     help="largest stdin accepted (default 8 MiB)")


def serve_config(ns, environ=None):
    """The ServerConfig `dcodex serve` options describe; ValueError or OSError for a bad one."""
    from dataclasses import replace as _replace

    from .server import DCODEX_DEFAULTS, DEFAULT_MAXIMA, ServerConfig

    environ = os.environ if environ is None else environ
    tokens = ()
    if ns.token_file:  # one token per line; blank lines and # comments are skipped
        with open(ns.token_file, encoding="utf-8") as f:
            tokens = tuple(line.strip() for line in f
                           if line.strip() and not line.lstrip().startswith("#"))
        if not tokens:
            raise ValueError(f"--token-file {ns.token_file} holds no token")
    elif environ.get("DCODEX_TOKEN", "").strip():
        tokens = (environ["DCODEX_TOKEN"].strip(),)
    cert = key = None
    if ns.tls_cert or ns.tls_key:
        if not (ns.tls_cert and ns.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        with open(ns.tls_cert, "rb") as f:
            cert = f.read()
        with open(ns.tls_key, "rb") as f:
            key = f.read()
    defaults = _replace(DCODEX_DEFAULTS, **{k: getattr(ns, k) for k in ("cpu_s", "wall_s", "memory", "output")
                                            if getattr(ns, k) is not None})
    maxima = _replace(DEFAULT_MAXIMA, **{k: getattr(ns, f"max_{k}") for k in ("cpu_s", "wall_s", "memory", "output")
                                         if getattr(ns, f"max_{k}") is not None})
    config = ServerConfig(
        host=ns.host, port=ns.port, health_port=ns.health_port, max_concurrent=ns.max_concurrent, queue_length=ns.queue_length,
        defaults=defaults, maxima=maxima, tokens=tokens, tls_cert=cert, tls_key=key,
        insecure=ns.insecure, strict=ns.strict, max_code_bytes=ns.max_code_bytes,
        max_stdin_bytes=ns.max_stdin_bytes, result_cache_entries=ns.result_cache_entries,
        grace_s=ns.grace, rate_limit=ns.rate_limit, rate_burst=ns.rate_burst,
        session_quota=ns.session_quota, session_ttl_s=ns.session_ttl, max_sessions=ns.max_sessions,
        input_timeout_s=ns.input_timeout, pin_cpu=ns.pin_cpu)
    config.check()
    return config


def _serve(ns) -> int:
    try:
        config = serve_config(ns)
    except (ValueError, OSError) as e:
        print(f"dcodex serve: {e}", file=sys.stderr)
        return 2
    from .server import serve

    try:
        return serve(config)
    except OSError as e:
        print(f"dcodex serve: {e}", file=sys.stderr)
        return 1
