"""The checked-in generated code must be exactly what `make proto` produces from the .proto files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to regenerate (pip install -e '.[dev]')")
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__"))
    protos = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "proto/tlsfleet/v1").glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            "--python_out=proto",
            "--pyi_out=proto",
            "--grpc_python_out=proto",
            *protos,
        ],
        cwd=tmp_path,
        check=True,
    )
    generated = sorted(p.name for p in (tmp_path / "proto/tlsfleet/v1").iterdir() if p.suffix in (".py", ".pyi"))
    checked_in = sorted(
        p.name
        for p in (ROOT / "proto/tlsfleet/v1").iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    )
    assert generated == checked_in, "generated files differ from the checked-in set; run `make proto`"
    stale = [
        name
        for name in generated
        if (tmp_path / "proto/tlsfleet/v1" / name).read_bytes() != (ROOT / "proto/tlsfleet/v1" / name).read_bytes()
    ]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"
