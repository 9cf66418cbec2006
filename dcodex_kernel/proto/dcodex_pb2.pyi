from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    OK: _ClassVar[Status]
    COMPILE_ERROR: _ClassVar[Status]
    RUNTIME_ERROR: _ClassVar[Status]
    SIGNALED: _ClassVar[Status]
    TIME_LIMIT: _ClassVar[Status]
    WALL_TIMEOUT: _ClassVar[Status]
    MEMORY_LIMIT: _ClassVar[Status]
    OUTPUT_LIMIT: _ClassVar[Status]
    CANCELLED: _ClassVar[Status]
    REJECTED: _ClassVar[Status]
    INTERNAL_ERROR: _ClassVar[Status]

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    RUN: _ClassVar[Phase]
    COMPILE: _ClassVar[Phase]
    NOTE: _ClassVar[Phase]
STATUS_UNSPECIFIED: Status
OK: Status
COMPILE_ERROR: Status
RUNTIME_ERROR: Status
SIGNALED: Status
TIME_LIMIT: Status
WALL_TIMEOUT: Status
MEMORY_LIMIT: Status
OUTPUT_LIMIT: Status
CANCELLED: Status
REJECTED: Status
INTERNAL_ERROR: Status
PHASE_UNSPECIFIED: Phase
RUN: Phase
COMPILE: Phase
NOTE: Phase

class CancelRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class EmptyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CodeRequest(_message.Message):
    __slots__ = ("language", "code", "stdin_data", "limits", "cflags", "ldflags", "args", "cache", "stdin_bytes", "color", "strict", "stream_stdin", "cases", "compare", "checker", "show_output", "session", "files", "sources", "workspace_digest", "workspace_full", "repeat", "run_id", "output_in_result")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    STDIN_DATA_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CFLAGS_FIELD_NUMBER: _ClassVar[int]
    LDFLAGS_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    STDIN_BYTES_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    STREAM_STDIN_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    CHECKER_FIELD_NUMBER: _ClassVar[int]
    SHOW_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FULL_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_IN_RESULT_FIELD_NUMBER: _ClassVar[int]
    language: str
    code: str
    stdin_data: str
    limits: Limits
    cflags: _containers.RepeatedScalarFieldContainer[str]
    ldflags: _containers.RepeatedScalarFieldContainer[str]
    args: _containers.RepeatedScalarFieldContainer[str]
    cache: bool
    stdin_bytes: bytes
    color: bool
    strict: bool
    stream_stdin: bool
    cases: _containers.RepeatedCompositeFieldContainer[TestCase]
    compare: str
    checker: CheckerProgram
    show_output: bool
    session: str
    files: _containers.ScalarMap[str, bytes]
    sources: _containers.RepeatedScalarFieldContainer[str]
    workspace_digest: str
    workspace_full: bool
    repeat: int
    run_id: str
    output_in_result: bool
    def __init__(self, language: _Optional[str] = ..., code: _Optional[str] = ..., stdin_data: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., cflags: _Optional[_Iterable[str]] = ..., ldflags: _Optional[_Iterable[str]] = ..., args: _Optional[_Iterable[str]] = ..., cache: _Optional[bool] = ..., stdin_bytes: _Optional[bytes] = ..., color: _Optional[bool] = ..., strict: _Optional[bool] = ..., stream_stdin: _Optional[bool] = ..., cases: _Optional[_Iterable[_Union[TestCase, _Mapping]]] = ..., compare: _Optional[str] = ..., checker: _Optional[_Union[CheckerProgram, _Mapping]] = ..., show_output: _Optional[bool] = ..., session: _Optional[str] = ..., files: _Optional[_Mapping[str, bytes]] = ..., sources: _Optional[_Iterable[str]] = ..., workspace_digest: _Optional[str] = ..., workspace_full: _Optional[bool] = ..., repeat: _Optional[int] = ..., run_id: _Optional[str] = ..., output_in_result: _Optional[bool] = ...) -> None: ...

class RunFigures(_message.Message):
    __slots__ = ("wall_time_s", "cpu_time_s", "peak_memory_bytes")
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_S_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    wall_time_s: float
    cpu_time_s: float
    peak_memory_bytes: int
    def __init__(self, wall_time_s: _Optional[float] = ..., cpu_time_s: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ...) -> None: ...

class TestCase(_message.Message):
    __slots__ = ("name", "input", "expected")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    name: str
    input: bytes
    expected: bytes
    def __init__(self, name: _Optional[str] = ..., input: _Optional[bytes] = ..., expected: _Optional[bytes] = ...) -> None: ...

class CheckerProgram(_message.Message):
    __slots__ = ("language", "code", "name")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    language: str
    code: str
    name: str
    def __init__(self, language: _Optional[str] = ..., code: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CaseResult(_message.Message):
    __slots__ = ("name", "verdict", "message", "wall_time_s", "cpu_time_s", "peak_memory_bytes", "exit_code", "signal")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_S_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    verdict: str
    message: str
    wall_time_s: float
    cpu_time_s: float
    peak_memory_bytes: int
    exit_code: int
    signal: int
    def __init__(self, name: _Optional[str] = ..., verdict: _Optional[str] = ..., message: _Optional[str] = ..., wall_time_s: _Optional[float] = ..., cpu_time_s: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("cpu_time_s", "wall_time_s", "memory_bytes", "output_bytes", "processes", "file_size_bytes", "open_files", "disk_bytes")
    CPU_TIME_S_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPEN_FILES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    cpu_time_s: float
    wall_time_s: float
    memory_bytes: int
    output_bytes: int
    processes: int
    file_size_bytes: int
    open_files: int
    disk_bytes: int
    def __init__(self, cpu_time_s: _Optional[float] = ..., wall_time_s: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., output_bytes: _Optional[int] = ..., processes: _Optional[int] = ..., file_size_bytes: _Optional[int] = ..., open_files: _Optional[int] = ..., disk_bytes: _Optional[int] = ...) -> None: ...

class ExecutionLog(_message.Message):
    __slots__ = ("stdout_chunk", "stderr_chunk", "peak_memory_bytes", "execution_time_ms", "cache_hit", "wall_clock_timeout", "output_truncated", "status", "phase", "message", "exit_code", "signal", "cpu_time_s", "wall_time_s", "build_cached", "isolation", "cases", "workspace_stale", "input_wanted", "phase_start", "phase_detail", "runs")
    STDOUT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    STDERR_CHUNK_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    WALL_CLOCK_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_S_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    BUILD_CACHED_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_STALE_FIELD_NUMBER: _ClassVar[int]
    INPUT_WANTED_FIELD_NUMBER: _ClassVar[int]
    PHASE_START_FIELD_NUMBER: _ClassVar[int]
    PHASE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    stdout_chunk: str
    stderr_chunk: str
    peak_memory_bytes: int
    execution_time_ms: float
    cache_hit: bool
    wall_clock_timeout: bool
    output_truncated: bool
    status: Status
    phase: Phase
    message: str
    exit_code: int
    signal: int
    cpu_time_s: float
    wall_time_s: float
    build_cached: bool
    isolation: _containers.RepeatedScalarFieldContainer[str]
    cases: _containers.RepeatedCompositeFieldContainer[CaseResult]
    workspace_stale: bool
    input_wanted: InputWanted
    phase_start: bool
    phase_detail: str
    runs: _containers.RepeatedCompositeFieldContainer[RunFigures]
    def __init__(self, stdout_chunk: _Optional[str] = ..., stderr_chunk: _Optional[str] = ..., peak_memory_bytes: _Optional[int] = ..., execution_time_ms: _Optional[float] = ..., cache_hit: _Optional[bool] = ..., wall_clock_timeout: _Optional[bool] = ..., output_truncated: _Optional[bool] = ..., status: _Optional[_Union[Status, str]] = ..., phase: _Optional[_Union[Phase, str]] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., cpu_time_s: _Optional[float] = ..., wall_time_s: _Optional[float] = ..., build_cached: _Optional[bool] = ..., isolation: _Optional[_Iterable[str]] = ..., cases: _Optional[_Iterable[_Union[CaseResult, _Mapping]]] = ..., workspace_stale: _Optional[bool] = ..., input_wanted: _Optional[_Union[InputWanted, _Mapping]] = ..., phase_start: _Optional[bool] = ..., phase_detail: _Optional[str] = ..., runs: _Optional[_Iterable[_Union[RunFigures, _Mapping]]] = ...) -> None: ...

class InputWanted(_message.Message):
    __slots__ = ("prompt",)
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    def __init__(self, prompt: _Optional[str] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("request", "stdin_chunk", "stdin_eof", "cancel")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STDIN_CHUNK_FIELD_NUMBER: _ClassVar[int]
    STDIN_EOF_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    request: CodeRequest
    stdin_chunk: bytes
    stdin_eof: bool
    cancel: bool
    def __init__(self, request: _Optional[_Union[CodeRequest, _Mapping]] = ..., stdin_chunk: _Optional[bytes] = ..., stdin_eof: _Optional[bool] = ..., cancel: _Optional[bool] = ...) -> None: ...

class SystemMetrics(_message.Message):
    __slots__ = ("active_workers", "idle_workers", "recycling_workers", "current_pool_size", "total_requests_served", "p50_latency_ms", "p99_latency_ms", "cache_hits", "cache_misses", "peak_memory_usage_bytes", "cpu_load_average", "queued_requests", "queue_length", "version", "isolation", "degraded", "default_limits", "max_limits", "requests_rejected")
    ACTIVE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    IDLE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    RECYCLING_WORKERS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_SERVED_FIELD_NUMBER: _ClassVar[int]
    P50_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P99_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_AVERAGE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_LIMITS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    active_workers: int
    idle_workers: int
    recycling_workers: int
    current_pool_size: int
    total_requests_served: int
    p50_latency_ms: float
    p99_latency_ms: float
    cache_hits: int
    cache_misses: int
    peak_memory_usage_bytes: int
    cpu_load_average: float
    queued_requests: int
    queue_length: int
    version: str
    isolation: _containers.RepeatedScalarFieldContainer[str]
    degraded: _containers.RepeatedScalarFieldContainer[str]
    default_limits: Limits
    max_limits: Limits
    requests_rejected: int
    def __init__(self, active_workers: _Optional[int] = ..., idle_workers: _Optional[int] = ..., recycling_workers: _Optional[int] = ..., current_pool_size: _Optional[int] = ..., total_requests_served: _Optional[int] = ..., p50_latency_ms: _Optional[float] = ..., p99_latency_ms: _Optional[float] = ..., cache_hits: _Optional[int] = ..., cache_misses: _Optional[int] = ..., peak_memory_usage_bytes: _Optional[int] = ..., cpu_load_average: _Optional[float] = ..., queued_requests: _Optional[int] = ..., queue_length: _Optional[int] = ..., version: _Optional[str] = ..., isolation: _Optional[_Iterable[str]] = ..., degraded: _Optional[_Iterable[str]] = ..., default_limits: _Optional[_Union[Limits, _Mapping]] = ..., max_limits: _Optional[_Union[Limits, _Mapping]] = ..., requests_rejected: _Optional[int] = ...) -> None: ...
