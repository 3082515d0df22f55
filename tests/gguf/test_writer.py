"""The streaming writer: round trips through our reader and the PyPI `gguf` reader."""

from __future__ import annotations

import gguf as gguf_py
import numpy as np
import pytest

from kiln.errors import GGUFError
from kiln.gguf import GGUFFile, GGUFWriter, ValueType, copy_metadata

SCALARS = [
    ("u8", 200, ValueType.UINT8),
    ("i8", -100, ValueType.INT8),
    ("u16", 60000, ValueType.UINT16),
    ("i16", -30000, ValueType.INT16),
    ("u32", 4_000_000_000, ValueType.UINT32),
    ("i32", -2_000_000_000, ValueType.INT32),
    ("f32", 0.5, ValueType.FLOAT32),
    ("bool", True, ValueType.BOOL),
    ("str", "héllo ✓", ValueType.STRING),
    ("u64", 2**63 + 5, ValueType.UINT64),
    ("i64", -(2**62), ValueType.INT64),
    ("f64", 1.0 / 3.0, ValueType.FLOAT64),
]


def _write_all_types(path, alignment=32):
    rng = np.random.default_rng(1)
    tensors = {
        "a": (rng.standard_normal((5, 64)).astype(np.float32), 0),
        "b": (rng.standard_normal((3, 32)).astype(np.float16), 1),
        "c": (rng.integers(0, 256, size=(2, 34), dtype=np.uint8), 8),  # Q8_0: 2 rows of one block
    }
    calls = []
    w = GGUFWriter(path, alignment=alignment)
    for key, value, vtype in SCALARS:
        w.add(f"test.{key}", value, vtype)
    w.add("test.arr_i32", [1, -2, 3])
    w.add("test.arr_u64", [1, 2**40], ValueType.ARRAY, ValueType.UINT64)
    w.add("test.arr_f32", [0.25, -1.5])
    w.add("test.arr_str", ["x", "", "ü"])
    w.add("test.arr_bool", [True, False])
    w.add("test.nested", [[1, 2], [3]], ValueType.ARRAY, (ValueType.ARRAY, ValueType.INT16))
    w.add("test.empty", [], ValueType.ARRAY, ValueType.FLOAT32)
    shapes = {"a": (64, 5), "b": (32, 3), "c": (32, 2)}
    for name, (arr, type_id) in tensors.items():
        def source(arr=arr, name=name):
            calls.append(name)
            return arr
        w.add_tensor(name, shapes[name], type_id, source)
    assert calls == []  # nothing is read before writing
    w.write()
    assert calls == ["a", "b", "c"]
    return tensors


@pytest.mark.parametrize("alignment", [32, 64])
def test_round_trip_ours(tmp_path, alignment):
    p = tmp_path / "rt.gguf"
    tensors = _write_all_types(p, alignment)
    f = GGUFFile(p)
    assert f.alignment == alignment
    for key, value, vtype in SCALARS:
        got = f.metadata[f"test.{key}"]
        assert f.value_types[f"test.{key}"][0] == vtype
        assert got == (pytest.approx(value) if vtype == ValueType.FLOAT32 else value)
    assert f.metadata["test.arr_u64"] == [1, 2**40]
    assert f.value_types["test.arr_u64"] == (ValueType.ARRAY, ValueType.UINT64)
    assert f.metadata["test.arr_str"] == ["x", "", "ü"]
    assert f.metadata["test.nested"] == [[1, 2], [3]]
    assert f.value_types["test.nested"] == (ValueType.ARRAY, (ValueType.ARRAY, ValueType.INT16))
    assert f.metadata["test.empty"] == []
    for name, (arr, _) in tensors.items():
        info = f.tensors[name]
        assert info.offset % alignment == 0
        assert f.tensor_bytes(name).tobytes() == arr.tobytes()
    # copying metadata keeps every value and type
    q = tmp_path / "copy.gguf"
    w = GGUFWriter(q, alignment=alignment)
    copy_metadata(w, f.metadata, f.value_types, skip={"general.alignment"})
    w.write()
    g = GGUFFile(q)
    assert g.metadata == f.metadata and g.value_types == f.value_types


def test_round_trip_gguf_package(tmp_path):
    p = tmp_path / "rt.gguf"
    tensors = _write_all_types(p)
    r = gguf_py.GGUFReader(p)
    field = r.fields["test.u64"]
    assert field.parts[field.data[0]].tolist()[0] == 2**63 + 5
    field = r.fields["test.str"]
    assert bytes(field.parts[field.data[0]]).decode() == "héllo ✓"
    field = r.fields["test.arr_str"]
    assert [bytes(field.parts[i]).decode() for i in field.data] == ["x", "", "ü"]
    by_name = {t.name: t for t in r.tensors}
    assert np.array_equal(np.asarray(by_name["a"].data), tensors["a"][0])
    assert np.array_equal(np.asarray(by_name["b"].data), tensors["b"][0])
    assert by_name["c"].tensor_type == gguf_py.GGMLQuantizationType.Q8_0


def test_failed_write_leaves_no_file(tmp_path):
    p = tmp_path / "bad.gguf"
    w = GGUFWriter(p)
    w.add_tensor("t", (32, 2), 0, lambda: np.zeros(3, np.float32))  # wrong size
    with pytest.raises(GGUFError, match="got 12 bytes"):
        w.write()
    assert list(tmp_path.iterdir()) == []


def test_bad_row_size(tmp_path):
    w = GGUFWriter(tmp_path / "x.gguf")
    with pytest.raises(GGUFError, match="row size 40 is not divisible by the block size 32 of Q8_0"):
        w.add_tensor("t", (40, 2), 8, b"")
