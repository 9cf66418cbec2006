"""What a kernel answers while a person types: completions and "is this cell complete?".

Pure text functions (no Jupyter, no engine), so they are cheap and easy to test.
"""

from __future__ import annotations

import builtins
import codeop
import keyword
import re
import warnings

from .request import Language

HEADER = re.compile(r"^[ \t]*%%?dcodex\b")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPTION_WORD = re.compile(r"-[-A-Za-z0-9]*$")

C_KEYWORDS = """
auto break case char const continue default do double else enum extern float for goto if inline
int long register restrict return short signed sizeof static struct switch typedef union unsigned
void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic _Noreturn _Static_assert
_Thread_local bool true false NULL
""".split()

CPP_KEYWORDS = """
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
co_return co_yield decltype default delete do double dynamic_cast else enum explicit export extern
false float for friend goto if inline int long mutable namespace new noexcept not not_eq nullptr
operator or or_eq private protected public register reinterpret_cast requires return short signed
sizeof static static_assert static_cast struct switch template this thread_local throw true try
typedef typeid typename union unsigned using virtual void volatile wchar_t while xor xor_eq
""".split()

PREPROCESSOR = ["#include", "#define", "#undef", "#ifdef", "#ifndef", "#if", "#elif", "#else",
                "#endif", "#pragma", "#error"]

# A few names from the standard libraries people reach for first in a notebook cell.
C_LIBRARY = """
printf scanf puts putchar getchar fgets fprintf sprintf snprintf fflush stdin stdout stderr
malloc calloc realloc free memcpy memset memcmp strlen strcmp strncmp strcpy strncpy strcat strchr
strstr atoi atol strtol strtod qsort bsearch abs exit EXIT_SUCCESS EXIT_FAILURE size_t int8_t
int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t sqrt pow sin cos exp log floor ceil
""".split()

CPP_LIBRARY = """
std cout cin cerr endl string vector map unordered_map set unordered_set pair tuple array deque
list queue stack priority_queue optional variant unique_ptr shared_ptr make_unique make_shared
move forward sort find begin end size_t iostream sstream algorithm numeric accumulate transform
""".split() + C_LIBRARY

WORDS = {
    Language.C: sorted(set(C_KEYWORDS + C_LIBRARY)),
    Language.CPP: sorted(set(CPP_KEYWORDS + CPP_LIBRARY)),
    Language.PYTHON: sorted(set(keyword.kwlist + [n for n in dir(builtins) if not n.startswith("_")])),
}


# ---------------------------------------------------------------------------------------------
# completion

def complete(code: str, cursor_pos: int, language: Language, options: list[str] = ()) -> dict:
    """A `complete_reply` content: the header's options on a `%%dcodex` line, otherwise the
    language's keywords plus the identifiers already in the cell."""
    cursor_pos = len(code) if cursor_pos is None else max(0, min(cursor_pos, len(code)))
    line_start = code.rfind("\n", 0, cursor_pos) + 1
    before = code[line_start:cursor_pos]

    if line_start == 0 and HEADER.match(before) and options:
        m = _OPTION_WORD.search(before)
        if m and before[:m.start()].endswith((" ", "\t")):
            prefix = m.group(0)
            return _reply([o for o in options if o.startswith(prefix)], cursor_pos - len(prefix),
                          cursor_pos)
        return _reply([], cursor_pos, cursor_pos)

    m = re.search(r"#?[A-Za-z_][A-Za-z0-9_]*$|#$", before)
    prefix = m.group(0) if m else ""
    start = cursor_pos - len(prefix)
    if not prefix:
        return _reply([], cursor_pos, cursor_pos)
    if prefix.startswith("#"):
        if language is Language.PYTHON:
            return _reply([], cursor_pos, cursor_pos)
        return _reply([d for d in PREPROCESSOR if d.startswith(prefix)], start, cursor_pos)

    # Identifiers elsewhere in the cell; the word being typed does not count as one.
    end = cursor_pos + len(re.match(r"[A-Za-z0-9_]*", code[cursor_pos:]).group(0))
    used = set(_IDENT.findall(code[:start] + " " + code[end:]))
    candidates = used.union(WORDS[language])
    matches = sorted(w for w in candidates if w.startswith(prefix) and w != prefix)
    return _reply(matches, start, cursor_pos)


def _reply(matches, start, end) -> dict:
    return {"status": "ok", "matches": matches, "cursor_start": start, "cursor_end": end,
            "metadata": {}}


# ---------------------------------------------------------------------------------------------
# is_complete

def is_complete(code: str, language: Language) -> dict:
    """An `is_complete_reply` content. Header lines are not code: they are skipped."""
    lines = code.split("\n")
    if lines and HEADER.match(lines[0]):
        lines = lines[1:]
    body = "\n".join(lines)
    if language is Language.PYTHON:
        return _python_complete(body)
    return _c_complete(body)


def _python_complete(code: str) -> dict:
    with warnings.catch_warnings():  # e.g. SyntaxWarning for "\d" must not reach the kernel log
        warnings.simplefilter("ignore")
        try:
            compiled = codeop.compile_command(code, "<cell>", "exec")
        except (SyntaxError, ValueError, OverflowError):
            return {"status": "invalid"}
    last = code.rstrip("\n").split("\n")[-1] if code.strip() else ""
    if compiled is None:
        return {"status": "incomplete", "indent": _next_indent(last)}
    # Like IPython: inside an indented block the cell goes on until a blank line ends it.
    if last[:1] in (" ", "\t") and not code.endswith("\n"):
        return {"status": "incomplete", "indent": _next_indent(last)}
    return {"status": "complete"}


def _next_indent(last_line: str) -> str:
    indent = last_line[:len(last_line) - len(last_line.lstrip())]
    return indent + "    " if last_line.rstrip().endswith(":") else indent


_PAIRS = {")": "(", "]": "[", "}": "{"}


def _c_complete(code: str) -> dict:
    """Balanced (), [] and {} outside comments, strings and character literals."""
    stack: list[str] = []
    i, n = 0, len(code)
    while i < n:
        ch = code[i]
        if code.startswith("//", i):
            j = code.find("\n", i)
            while j != -1 and code[j - 1] == "\\":  # a line comment continued with a backslash
                j = code.find("\n", j + 1)
            if j == -1:
                return {"status": "incomplete", "indent": ""} if code.endswith("\\") else _c_status(stack)
            i = j + 1
        elif code.startswith("/*", i):
            j = code.find("*/", i + 2)
            if j == -1:
                return {"status": "incomplete", "indent": ""}
            i = j + 2
        elif ch in "\"'":
            j = i + 1
            while j < n and code[j] != ch:
                if code[j] == "\\":
                    j += 1
                elif code[j] == "\n":  # a literal cannot span lines
                    return {"status": "invalid"}
                j += 1
            if j >= n:
                return {"status": "invalid"}
            i = j + 1
        else:
            if ch in "([{":
                stack.append(ch)
            elif ch in _PAIRS:
                if not stack or stack[-1] != _PAIRS[ch]:
                    return {"status": "invalid"}
                stack.pop()
            i += 1
    if code.rstrip(" \t").endswith("\\"):  # a continued line (macro) goes on
        return {"status": "incomplete", "indent": ""}
    return _c_status(stack)


def _c_status(stack: list[str]) -> dict:
    if stack:
        return {"status": "incomplete", "indent": "    " * stack.count("{")}
    return {"status": "complete"}
