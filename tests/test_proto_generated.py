"""The committed Python modules of the gRPC API match proto/ (regenerate with tools/gen_proto.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    gen_proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_proto)
    gen_proto.generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert fresh, "protoc generated nothing"
    for relative in fresh:
        committed = ROOT / relative
        assert committed.exists(), f"{relative} is not committed: run tools/gen_proto.py"
        assert committed.read_text() == (tmp_path / relative).read_text(), (
            f"{relative} is stale: run tools/gen_proto.py")
