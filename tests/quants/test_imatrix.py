"""Reading legacy `.dat` importance matrices (kiln.quants.imatrix).

Oracle: ../shared/golden/imatrix.dat, written by ik_llama.cpp's tools, and the metadata
llama-quantize recorded about it in the golden quant files.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from kiln.errors import KilnError
from kiln.gguf import GGUFFile
from kiln.quants.imatrix import read_imatrix_dat


def _dat(
    entries: list[tuple[str, int, np.ndarray]], trailer: tuple[int, str] | None = (3, "data.txt")
) -> bytes:
    out = struct.pack("<i", len(entries))
    for name, ncall, values in entries:
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, len(values))
        out += np.asarray(values, "<f4").tobytes()
    if trailer is not None:
        chunks, dataset = trailer
        out += struct.pack("<ii", chunks, len(dataset.encode())) + dataset.encode()
    return out


def test_golden_imatrix(golden):
    im = read_imatrix_dat(golden / "imatrix.dat")
    with GGUFFile(golden / "quant" / "Q4_0.gguf") as q, GGUFFile(golden / "src.gguf") as src:
        assert len(im) == q.metadata["quantize.imatrix.entries_count"] == 9
        assert im.dataset == q.metadata["quantize.imatrix.dataset"] == "random-chisquare"
        assert im.chunks == q.metadata["quantize.imatrix.chunks_count"]
        for name, entry in im.entries.items():
            info = src.tensors[name]
            assert len(info.shape) == 2, name
            assert entry.values.dtype == np.float32 and entry.values.shape == (info.shape[0],), name
            assert entry.ncall == 1
            w = im.weights(name)
            assert w.dtype == np.float32 and (w > 0).all(), name
    assert "blk.0.attn_norm.weight" not in im and im.weights("blk.0.attn_norm.weight") is None
    assert set(im.as_weights()) == set(im.entries)


def test_weights_are_divided_by_ncall(tmp_path):
    values = np.array([4.0, 2.0, 1.0, 3.0], np.float32)
    p = tmp_path / "a.dat"
    p.write_bytes(_dat([("w", 4, values), ("z", 0, values)]))
    im = read_imatrix_dat(p)
    assert np.array_equal(im.weights("w"), values / np.float32(4))
    assert np.array_equal(im.weights("z"), values)  # ncall 0: values as stored
    assert im.ncall("w") == 4 and im.chunks == 3 and im.dataset == "data.txt"


def test_file_without_trailer(tmp_path):
    p = tmp_path / "old.dat"
    p.write_bytes(_dat([("w", 1, np.ones(8))], trailer=None))
    im = read_imatrix_dat(p)
    assert im.dataset is None and im.chunks == 0 and len(im) == 1


def test_truncated_files_raise(golden, tmp_path):
    data = (golden / "imatrix.dat").read_bytes()
    p = tmp_path / "cut.dat"
    for n in [0, 3, 4, 10, 30, 1000, len(data) - 30, len(data) - 1]:
        p.write_bytes(data[:n])
        with pytest.raises(KilnError, match=str(p)):
            read_imatrix_dat(p)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"GGUF" + bytes(60), "GGUF"),
        (struct.pack("<i", 0), "entry count 0"),
        (struct.pack("<i", -5) + bytes(40), "entry count -5"),
        (struct.pack("<i", 10**6) + bytes(40), "does not fit"),
        (struct.pack("<ii", 1, -3) + bytes(40), "name length -3"),
        (struct.pack("<ii", 1, 1) + b"w" + struct.pack("<ii", 1, 0) + bytes(8), "value count 0"),
        (_dat([("w", 1, np.array([1.0, np.nan]))]), "non-finite"),
        (_dat([("w", 1, np.ones(2)), ("w", 1, np.ones(2))]), "twice"),
        (_dat([("w", 1, np.ones(2))]) + b"junk", "unexpected bytes"),
    ],
)
def test_garbage_raises(tmp_path, content, problem):
    p = tmp_path / "bad.dat"
    p.write_bytes(content)
    with pytest.raises(KilnError, match=problem):
        read_imatrix_dat(p)


def test_random_garbage_and_missing_file_raise(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "noise.dat"
    for _ in range(20):
        p.write_bytes(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes())
        with pytest.raises(KilnError):
            read_imatrix_dat(p)
    with pytest.raises(KilnError, match="cannot read"):
        read_imatrix_dat(tmp_path / "missing.dat")
