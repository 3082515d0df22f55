"""Every type of ik_llama.cpp's golden set (../shared/golden): dequantizing each tensor of
quant/<TYPE>.gguf reproduces the sha256 of ik_llama.cpp's own dequantization exactly.

IQ1_BN and IQ2_BN are the exception, because that oracle is wrong for them: ik_llama.cpp's
CPU `dequantize_row_iq1_bn/iq2_bn` (iqk_quantize.cpp) read the blocks from the row's first
byte, over the row scale, and never apply it, so the manifest holds unscaled digits of
shifted blocks (its weighted RMSE for them is ~14x the weights' own RMS). kiln's
dequantization applies the row scale, as ik_llama.cpp's matmuls, its CUDA dequantizer and
its own IQ2_BN_R4 dequantizer do. For those tensors the sha256 is checked against
`iqk_bn.dequantize_like_ik_cpu` (same bit layout, same bug), and the real values are
checked against the IQ2_BN_R4 oracle in `test_bn_values_match_ik_llama_cpp_r4_dequantizer`.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from kiln.gguf import GGUFFile
from kiln.quants import dequantize, quant_type
from kiln.quants.iqk_bn import dequantize_like_ik_cpu
from tests.conftest import GOLDEN

BUGGY_ORACLE = ("IQ1_BN", "IQ2_BN")

MANIFEST = json.loads((GOLDEN / "manifest.json").read_text()) if (GOLDEN / "manifest.json").exists() else {"types": {}}


@pytest.mark.parametrize("type_name", list(MANIFEST["types"]))
def test_dequantize_reproduces_ik_llama_cpp(golden, type_name):
    entry = MANIFEST["types"][type_name]
    missing = sorted({t["type"] for t in entry["tensors"].values() if not quant_type(t["type"]).can_dequantize})
    if missing:
        pytest.fail(f"no dequantizer for {', '.join(missing)}")
    with GGUFFile(golden / entry["file"]) as f:
        for name, expected in entry["tensors"].items():
            info = f.tensors[name]
            assert info.type_name == expected["type"]
            values = dequantize(info.type_id, f.tensor_bytes(name), info.shape, name)
            if info.type_name in BUGGY_ORACLE:
                rows = np.asarray(f.tensor_bytes(name)).reshape(info.shape[1], -1)
                values = dequantize_like_ik_cpu(info.type_name, rows, info.shape[0])
            assert np.array_equal(values.reshape(-1)[:64], np.float32(expected["first64"])), name
            assert hashlib.sha256(values.astype("<f4").tobytes()).hexdigest() == expected["sha256_f32"], name


def _weighted_rmse(values: np.ndarray, src: np.ndarray, w: np.ndarray) -> float:
    return float(np.sqrt(np.sum(w * (values - src) ** 2) / (w.sum() * src.shape[0])))


def test_bn_values_match_ik_llama_cpp_r4_dequantizer(golden):
    """IQ2_BN_R4 holds IQ2_BN's blocks interleaved, and ik_llama.cpp's R4 dequantizer applies
    the row scale; kiln's IQ1_BN and IQ2_BN dequantization must give the same error against
    the source as those values, tensor by tensor."""
    from kiln.quants.imatrix import read_imatrix_dat

    imatrix = read_imatrix_dat(golden / "imatrix.dat")
    r4 = MANIFEST["types"]["IQ2_BN_R4"]["tensors"]
    with GGUFFile(golden / "src.gguf") as src:
        for type_name in BUGGY_ORACLE:
            with GGUFFile(golden / MANIFEST["types"][type_name]["file"]) as f:
                for name, expected in r4.items():
                    if expected["type"] != "IQ2_BN_R4":
                        continue
                    info, s = f.tensors[name], src.tensors[name]
                    values = dequantize(info.type_id, f.tensor_bytes(name), info.shape, name)
                    x = dequantize(s.type_id, src.tensor_bytes(name), s.shape, name)
                    got = _weighted_rmse(values, x, imatrix.weights(name))
                    assert abs(got - expected["weighted_rmse"]) <= 1e-3 * expected["weighted_rmse"], (type_name, name)
