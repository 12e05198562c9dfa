"""Generate the message contracts from ``proto/`` (``make proto``; a test checks staleness)."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
OUTPUT_DIR = Path(__file__).resolve().parent / "contracts"


def generate(output_dir: Path = OUTPUT_DIR) -> list[Path]:
    """Write ``*_pb2.py`` and ``*_pb2.pyi`` for every proto file into ``output_dir``."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={output_dir}",
        f"--pyi_out={output_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(output_dir.glob("*_pb2.py*"))


if __name__ == "__main__":
    for path in generate():
        sys.stdout.write(f"wrote {path.relative_to(REPO_ROOT)}\n")
