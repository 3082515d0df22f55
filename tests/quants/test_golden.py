"""Every type of ik_llama.cpp's golden set (../shared/golden): dequantizing each tensor of
quant/<TYPE>.gguf reproduces the sha256 of ik_llama.cpp's own dequantization exactly."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from kiln.gguf import GGUFFile
from kiln.quants import dequantize, quant_type
from tests.conftest import GOLDEN

MANIFEST = json.loads((GOLDEN / "manifest.json").read_text()) if (GOLDEN / "manifest.json").exists() else {"types": {}}


@pytest.mark.parametrize("type_name", list(MANIFEST["types"]))
def test_dequantize_reproduces_ik_llama_cpp(golden, type_name):
    entry = MANIFEST["types"][type_name]
    missing = sorted({t["type"] for t in entry["tensors"].values() if not quant_type(t["type"]).can_dequantize})
    if missing:
        pytest.skip(f"dequantize not implemented yet for {', '.join(missing)}")
    with GGUFFile(golden / entry["file"]) as f:
        for name, expected in entry["tensors"].items():
            info = f.tensors[name]
            assert info.type_name == expected["type"]
            values = dequantize(info.type_id, f.tensor_bytes(name), info.shape, name)
            assert np.array_equal(values.reshape(-1)[:64], np.float32(expected["first64"])), name
            assert hashlib.sha256(values.astype("<f4").tobytes()).hexdigest() == expected["sha256_f32"], name
