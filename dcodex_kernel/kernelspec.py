"""The three kernelspecs (`dcodex-c`, `dcodex-cpp`, `dcodex-python`): what they say, their logos,
and installing them. The repository's `kernelspec/` folder is this module's output
(`python -m dcodex_kernel.kernelspec kernelspec`), so an installed wheel needs no data files."""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import zlib

from .request import Language

SPECS = {
    "dcodex-c": (Language.C, "C (DCodeX)", "c"),
    "dcodex-cpp": (Language.CPP, "C++ (DCodeX)", "c++"),
    "dcodex-python": (Language.PYTHON, "Python 3 (DCodeX)", "python"),
}

# Logo text and colours (background, text) per language.
LOGOS = {
    Language.C: ("C", (0x28, 0x35, 0x93), (0xFF, 0xFF, 0xFF)),
    Language.CPP: ("C++", (0x00, 0x59, 0x9C), (0xFF, 0xFF, 0xFF)),
    Language.PYTHON: ("Py", (0x37, 0x76, 0xAB), (0xFF, 0xD4, 0x3B)),
}
LOGO_SIZES = (32, 64)


def interpreter() -> str:
    """The Python that kernel.json should start: this one, by a path that keeps working.

    In a virtual environment `bin/python` is a symlink whose target is the base interpreter,
    which does not see the venv's packages: keep the venv path. Elsewhere resolve symlinks
    (and shims) to the real file."""
    exe = os.path.abspath(sys.executable)
    if sys.prefix != sys.base_prefix:
        return exe
    return os.path.realpath(exe)


def kernel_json(name: str, python: str | None = None, env: dict | None = None) -> dict:
    language, display_name, spec_language = SPECS[name]
    spec = {
        "argv": [python or interpreter(), "-m", "dcodex_kernel.kernel", "-f", "{connection_file}",
                 f"--DCodeXKernel.language={language.value}"],
        "display_name": display_name,
        "language": spec_language,
        # The kernel cancels the running program itself on interrupt_request (see kernel.py).
        "interrupt_mode": "message",
        # Cells are separate programs: no debugger to offer.
        "metadata": {"debugger": False},
    }
    if env:
        spec["env"] = dict(env)
    return spec


def write_spec(directory: str, name: str, python: str | None = None, env: dict | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump(kernel_json(name, python, env), f, indent=1)
        f.write("\n")
    language = SPECS[name][0]
    for size in LOGO_SIZES:
        with open(os.path.join(directory, f"logo-{size}x{size}.png"), "wb") as f:
            f.write(logo_png(language, size))


def install(*, user: bool = False, prefix: str | None = None, env: dict | None = None,
            names=tuple(SPECS)) -> list[str]:
    """Install the kernelspecs; return the directories written.

    Neither `user` nor `prefix`: Jupyter's system-wide directory (as `jupyter kernelspec install`)."""
    from jupyter_client.kernelspec import KernelSpecManager

    manager = KernelSpecManager()
    installed = []
    with tempfile.TemporaryDirectory(prefix="dcodex-kernelspec-") as tmp:
        for name in names:
            source = os.path.join(tmp, name)
            write_spec(source, name, env=env)
            installed.append(manager.install_kernel_spec(source, kernel_name=name, user=user,
                                                         prefix=prefix))
    return installed


# ---------------------------------------------------------------------------------------------
# logos: a rounded square with the language's name, drawn with a 5x7 pixel font and written as
# an RGBA PNG by hand (zlib + struct) so no imaging library is needed.

_FONT = {
    "C": ["01110", "10001", "10000", "10000", "10000", "10001", "01110"],
    "+": ["00000", "00100", "00100", "11111", "00100", "00100", "00000"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "y": ["00000", "00000", "10001", "10001", "01111", "00001", "01110"],
}


def logo_pixels(language: Language, size: int) -> list[bytes]:
    """Rows of RGBA pixels."""
    text, background, foreground = LOGOS[language]
    glyph_w, glyph_h, gap = 5, 7, 1
    text_w = len(text) * glyph_w + (len(text) - 1) * gap
    scale = max(1, min(int(size * 0.8) // text_w, int(size * 0.6) // glyph_h))
    left = (size - text_w * scale) // 2
    top = (size - glyph_h * scale) // 2
    radius = size / 6

    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            if not _inside_rounded(x + 0.5, y + 0.5, size, radius):
                row += b"\0\0\0\0"
                continue
            gx, gy = (x - left) // scale, (y - top) // scale
            on = False
            if 0 <= gy < glyph_h and 0 <= gx < text_w and x >= left and y >= top:
                index, col = divmod(gx, glyph_w + gap)
                on = col < glyph_w and _FONT[text[index]][gy][col] == "1"
            row += bytes(foreground if on else background) + b"\xff"
        rows.append(bytes(row))
    return rows


def _inside_rounded(x: float, y: float, size: int, r: float) -> bool:
    cx = min(max(x, r), size - r)
    cy = min(max(y, r), size - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def logo_png(language: Language, size: int) -> bytes:
    return encode_png(logo_pixels(language, size), size, size)


def encode_png(rows: list[bytes], width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\0" + row for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def write_templates(root: str) -> None:
    """Regenerate the repository's kernelspec/ folder: specs naming plain `python` (what
    `jupyter kernelspec install kernelspec/dcodex-c` would use in an activated environment)."""
    for name in SPECS:
        write_spec(os.path.join(root, name), name, python="python")


if __name__ == "__main__":
    write_templates(sys.argv[1] if len(sys.argv) > 1 else "kernelspec")
