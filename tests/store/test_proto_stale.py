"""The committed protobuf code must match what ``make protos`` generates from the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("powerfleet/v1/powerfleet_pb2.py", "powerfleet/v1/powerfleet_pb2.pyi")


def test_committed_protobuf_code_is_fresh(tmp_path: Path) -> None:
    # exactly the Makefile's command (`make protos`), writing into a temp dir instead
    proc = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", "proto", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", "proto/powerfleet/v1/powerfleet.proto"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    makefile = (ROOT / "Makefile").read_text()
    assert "grpc_tools.protoc -I proto --python_out=. --pyi_out=. proto/powerfleet/v1/powerfleet.proto" in makefile
    stale = [name for name in GENERATED if (tmp_path / name).read_bytes() != (ROOT / name).read_bytes()]
    assert not stale, f"stale generated code: {', '.join(stale)}; run `make protos` and commit the result"
