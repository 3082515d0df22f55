"""The GGUF reader against the PyPI `gguf` package's reader, and its errors on bad files."""

from __future__ import annotations

import json
import shutil
import struct

import gguf as gguf_py
import numpy as np
import pytest

from kiln.errors import GGUFError, UnsupportedTypeError
from kiln.gguf import GGUFFile, GGUFWriter, ValueType


def _oracle_value(field):
    """A field of gguf.GGUFReader as a plain Python value."""
    types = field.types
    if types[0] == gguf_py.GGUFValueType.ARRAY:
        if types[-1] == gguf_py.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf_py.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def test_smollm2_matches_gguf_package(smollm2):
    ours = GGUFFile(smollm2)
    theirs = gguf_py.GGUFReader(smollm2)
    keys = [k for k in theirs.fields if not k.startswith("GGUF.")]
    assert list(ours.metadata) == keys
    for key in keys:
        field = theirs.fields[key]
        assert ours.metadata[key] == _oracle_value(field), key
        assert ours.value_types[key][0] == ValueType(int(field.types[0])), key
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        mine = ours.tensors[t.name]
        assert mine.shape == tuple(int(d) for d in t.shape)
        assert mine.type_id == int(t.tensor_type)
        assert mine.offset == int(t.data_offset)
        assert mine.nbytes == int(t.n_bytes)
    name = "blk.3.ffn_down.weight"
    oracle = np.asarray(theirs.get_tensor(list(ours.tensors).index(name)).data).view(np.uint8).reshape(-1)
    assert np.array_equal(ours.tensor_bytes(name), oracle)


def test_golden_files_sizes(golden):
    manifest = json.loads((golden / "manifest.json").read_text())
    for type_name, entry in manifest["types"].items():
        f = GGUFFile(golden / entry["file"])
        for name, t in entry["tensors"].items():
            info = f.tensors[name]
            assert info.type_name == t["type"], (type_name, name)
            # every tensor's bytes end before the next one starts (or the file ends)
        ends = sorted((i.offset, i.offset + i.nbytes) for i in f.tensors.values())
        for (_s0, e0), (s1, _) in zip(ends, ends[1:], strict=False):
            assert e0 <= s1, type_name
        assert ends[-1][1] <= f.paths[0].stat().st_size
        f.close()


def _tiny(path, type_id=0, shape=(8, 2), data=None):
    with GGUFWriter(path) as w:
        w.add("general.architecture", "llama")
        w.add_tensor("t", shape, type_id, data if data is not None else np.zeros(shape[::-1], np.float32))
    return path


def test_missing_file(tmp_path):
    with pytest.raises(GGUFError, match="no such file"):
        GGUFFile(tmp_path / "nope.gguf")


def test_wrong_magic(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"GGML" + b"\0" * 100)
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFFile(p)


def test_truncated_header(tmp_path):
    p = _tiny(tmp_path / "a.gguf")
    raw = p.read_bytes()
    for cut in (6, 20, 40, 60):
        q = tmp_path / f"cut{cut}.gguf"
        q.write_bytes(raw[:cut])
        with pytest.raises(GGUFError, match="truncated GGUF header"):
            GGUFFile(q)


def test_tensor_data_past_end(tmp_path):
    p = _tiny(tmp_path / "a.gguf")
    raw = p.read_bytes()
    (tmp_path / "short.gguf").write_bytes(raw[:-8])
    with pytest.raises(GGUFError, match="tensor t .* runs past the end of the file"):
        GGUFFile(tmp_path / "short.gguf")


def test_unknown_type_id_only_fails_on_use(tmp_path):
    p = _tiny(tmp_path / "a.gguf")
    raw = bytearray(p.read_bytes())
    # patch the tensor's type id (the u32 right before its u64 offset at the end of the tensor info)
    info_at = raw.index(b"\x01\x00\x00\x00\x00\x00\x00\x00t") + 9
    type_at = info_at + 4 + 2 * 8
    assert struct.unpack_from("<I", raw, type_at)[0] == 0
    struct.pack_into("<I", raw, type_at, 250)
    q = tmp_path / "unknown.gguf"
    q.write_bytes(bytes(raw))
    f = GGUFFile(q)  # opening works
    assert f.tensors["t"].type_name == "type250"
    with pytest.raises(UnsupportedTypeError, match="unknown type id 250 in tensor t"):
        f.tensor_bytes("t")


def _write_split(tmp_path, count=3):
    prefix = tmp_path / "model"
    rng = np.random.default_rng(0)
    tensors = {}
    for no in range(count):
        with GGUFWriter(f"{prefix}-{no + 1:05d}-of-{count:05d}.gguf") as w:
            if no == 0:
                w.add("general.architecture", "llama")
            w.add("split.no", no, ValueType.UINT16)
            w.add("split.count", count, ValueType.UINT16)
            w.add("split.tensors.count", 2 * count, ValueType.INT32)
            for j in range(2):
                name = f"t{no}.{j}"
                tensors[name] = rng.standard_normal((3, 32)).astype(np.float32)
                w.add_tensor(name, (32, 3), 0, tensors[name])
    return prefix, tensors


def test_split_files(tmp_path):
    prefix, tensors = _write_split(tmp_path)
    for part in (1, 2):  # any part opens the whole set
        f = GGUFFile(f"{prefix}-{part:05d}-of-00003.gguf")
        assert len(f.paths) == 3 and f.metadata["general.architecture"] == "llama"
        assert list(f.tensors) == list(tensors)
        for name, value in tensors.items():
            assert np.array_equal(f.tensor_bytes(name).view(np.float32).reshape(3, 32), value)


def test_split_file_missing(tmp_path):
    prefix, _ = _write_split(tmp_path)
    (tmp_path / "model-00002-of-00003.gguf").unlink()
    with pytest.raises(GGUFError, match="model-00002-of-00003.gguf: split file missing"):
        GGUFFile(f"{prefix}-00001-of-00003.gguf")


def test_split_count_mismatch(tmp_path):
    prefix, _ = _write_split(tmp_path)
    shutil.copy(f"{prefix}-00001-of-00003.gguf", tmp_path / "renamed.gguf")
    with pytest.raises(GGUFError, match="split.count says 3 parts"):
        GGUFFile(tmp_path / "renamed.gguf")
