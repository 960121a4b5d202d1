"""Regenerate the Python modules of the gRPC API from proto/ into millpond/v1/.

Run after editing any .proto: ``python tools/gen_proto.py``. The generated
files are committed (clients then need no protoc); a test regenerates them
into a temporary folder and fails if the committed ones differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path) -> None:
    """Write ``millpond/v1/*_pb2*.py`` (and .pyi stubs) for every proto under ``out_dir``."""
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main([
        "protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
        f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
        *protos,
    ])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
