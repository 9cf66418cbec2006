"""Regenerate the Python modules of dcodex.proto: `python -m dcodex_kernel.proto.generate [OUTDIR]`.

Needs grpcio-tools (a test extra). The generated gRPC module imports its message module by a
plain `import dcodex_pb2`, which works only with this directory on sys.path; it is rewritten
here to a relative import so the modules work as a package.
"""

from __future__ import annotations

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "dcodex.proto"
OUTPUTS = ("dcodex_pb2.py", "dcodex_pb2.pyi", "dcodex_pb2_grpc.py")


def generate(outdir: str = HERE) -> list[str]:
    """Write the generated modules into `outdir`; return their paths."""
    from grpc_tools import protoc

    os.makedirs(outdir, exist_ok=True)
    code = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"--python_out={outdir}",
                        f"--pyi_out={outdir}", f"--grpc_python_out={outdir}",
                        os.path.join(HERE, PROTO)])
    if code != 0:
        raise RuntimeError(f"protoc failed (exit {code})")
    grpc_module = os.path.join(outdir, "dcodex_pb2_grpc.py")
    with open(grpc_module) as f:
        text = f.read()
    text, n = re.subn(r"^import dcodex_pb2 as dcodex__pb2$",
                      "from . import dcodex_pb2 as dcodex__pb2", text, flags=re.MULTILINE)
    if n != 1:
        raise RuntimeError("generated gRPC module: the import of dcodex_pb2 was not found")
    with open(grpc_module, "w") as f:
        f.write(text)
    return [os.path.join(outdir, name) for name in OUTPUTS]


if __name__ == "__main__":
    for path in generate(sys.argv[1] if len(sys.argv) > 1 else HERE):
        print(path)
