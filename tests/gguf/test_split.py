"""Split sets: shards decided and written as llama-gguf-split writes them, merged back byte for byte.

Oracles: the sha256 of the shards that ik_llama.cpp's llama-gguf-split wrote for
SmolLM2-135M-Instruct Q4_1 (recorded below), the original file's bytes for the
split-then-merge round trip, the PyPI `gguf` reader for the shards' contents, and
shard layouts worked out by hand from gguf-split's rules.
"""

from __future__ import annotations

import hashlib

import gguf as gguf_py
import numpy as np
import pytest

from kiln.errors import GGUFError
from kiln.gguf import GGUFFile, GGUFWriter, ValueType
from kiln.gguf.split import (
    SplitLimits,
    SplitTensor,
    assign_shards,
    merge_split,
    plan_split,
    split_prefix,
    write_split,
)

# sha256 of llama-gguf-split's shards of SmolLM2-135M-Instruct.Q4_1.gguf (ik_llama.cpp, 2026-11-25)
IK_SHARDS = {
    ("--split-max-size", "40M"): [
        (41273984, "addc33d82777a3f8b34cdca5c12b6dbd5d6a8981592a84a05c4b624e7f4fff3a"),
        (39905856, "ad12b98a14f5a51bf895205e6e3b8a4dba99d0454be62ff4ca91cca6448d2596"),
        (17182912, "b38e4cbba61e5bc345d8765c99e8594acd98d433aced454d30e8ac9c05376cd3"),
    ],
    ("--split-max-tensors", "100", "--no-tensor-first-split"): [
        (1769600, "9ef8d457b609227b384d965f1c6369458e69eddb9bd76838429dcb36bea5070c"),
        (54468032, "8fc2e2954aa06f535bd8e411369211376ffd231adc9a53d69dda1cc823002c25"),
        (24389312, "65d40b6366bf8b175ed08cd4d3c288df0733c728d778117623a34d2f1316b5ee"),
        (17735936, "d3a2217c971005f4cfe1fa9bb6d0b0807fc2176451f0f506d961b954fc69d488"),
    ],
}
IK_LIMITS = {
    ("--split-max-size", "40M"): SplitLimits(max_bytes=40_000_000),
    ("--split-max-tensors", "100", "--no-tensor-first-split"): SplitLimits(
        max_tensors=100, no_tensor_first_split=True
    ),
}


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _tensors_of(f: GGUFFile) -> list[SplitTensor]:
    return [
        SplitTensor(name, info.shape, info.type_id, lambda name=name: f.tensor_bytes(name))
        for name, info in f.tensors.items()
    ]


def _small_model(path, alignment=32, n=7):
    """A GGUF with all sorts of metadata and n tensors of different types and sizes."""
    rng = np.random.default_rng(5)
    w = GGUFWriter(path, alignment=alignment)
    w.add("general.architecture", "llama")
    w.add("test.u16", 7, ValueType.UINT16)
    w.add("test.f64", 0.125, ValueType.FLOAT64)
    w.add("test.strings", ["a", "bé", ""])
    w.add("test.nested", [[1, 2], [3]], ValueType.ARRAY, (ValueType.ARRAY, ValueType.INT16))
    w.add("test.last", True)
    tensors = {}
    for i in range(n):
        rows = 1 + i % 3
        if i % 2:
            data = rng.integers(0, 256, size=(rows, 34 * (i + 1)), dtype=np.uint8)  # Q8_0 blocks
            shape, type_id = (32 * (i + 1), rows), 8
        else:
            data = rng.standard_normal((rows, 5 + 3 * i)).astype(np.float32)
            shape, type_id = (5 + 3 * i, rows), 0
        tensors[f"t{i}.weight"] = data
        w.add_tensor(f"t{i}.weight", shape, type_id, data)
    w.write()
    return tensors


# ----- the shard layout -----


def test_size_limit_counts_padded_tensor_data():
    # padded to 32: 32, 64, 32, 96, 32; each shard holds what fits under 100 bytes
    assert assign_shards([10, 40, 30, 70, 1], SplitLimits(max_bytes=100)) == [[0, 1], [2], [3], [4]]
    assert assign_shards([32, 32, 32, 32], SplitLimits(max_bytes=64)) == [[0, 1], [2, 3]]
    # a tensor over the limit gets its own shard, unless it would have to start an empty one
    assert assign_shards([10, 500, 10], SplitLimits(max_bytes=64)) == [[0], [1], [2]]
    with pytest.raises(
        GGUFError, match="tensor big alone takes 512 bytes, more than the maximum shard size of 64"
    ):
        assign_shards([500, 10], SplitLimits(max_bytes=64), names=["big", "small"])
    with pytest.raises(GGUFError, match="a shard would hold no tensor"):
        assign_shards([10, 10], SplitLimits(max_bytes=8, no_tensor_first_split=True))


def test_tensor_limit_and_empty_first_shard():
    assert assign_shards([1] * 7, SplitLimits(max_tensors=3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert assign_shards([1] * 6, SplitLimits(max_tensors=3)) == [[0, 1, 2], [3, 4, 5]]
    assert assign_shards([1] * 4, SplitLimits(max_tensors=2, no_tensor_first_split=True)) == [
        [],
        [0, 1],
        [2, 3],
    ]
    assert assign_shards([1] * 300, SplitLimits()) == [
        list(range(128)),
        list(range(128, 256)),
        list(range(256, 300)),
    ]


def test_limits_are_checked():
    with pytest.raises(GGUFError, match="not both"):
        SplitLimits(max_bytes=10, max_tensors=2)
    with pytest.raises(GGUFError, match="positive"):
        SplitLimits(max_tensors=0)


def test_prefix_drops_gguf_suffix():
    assert split_prefix("out/model.gguf") == "out/model"
    assert split_prefix("out/model") == "out/model"


def test_plan_writes_nothing_and_gives_exact_sizes(tmp_path):
    _small_model(tmp_path / "m.gguf")
    with GGUFFile(tmp_path / "m.gguf") as f:
        calls = []
        tensors = [SplitTensor(t.name, t.shape, t.type_id, lambda: calls.append(1)) for t in _tensors_of(f)]
        plan = plan_split(tmp_path / "s.gguf", f.metadata, f.value_types, tensors, SplitLimits(max_tensors=3))
        assert calls == [] and list(tmp_path.iterdir()) == [tmp_path / "m.gguf"]
        assert [s.path.name for s in plan] == [f"s-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
        assert [len(s.tensors) for s in plan] == [3, 3, 1]
        write_split(tmp_path / "s", f.metadata, f.value_types, _tensors_of(f), SplitLimits(max_tensors=3))
    assert [s.path.stat().st_size for s in plan] == [s.size for s in plan]


# ----- writing and merging -----


@pytest.mark.parametrize("alignment", [32, 64])
def test_split_then_merge_gives_back_the_same_bytes(tmp_path, alignment):
    original = tmp_path / "m.gguf"
    tensors = _small_model(original, alignment)
    with GGUFFile(original) as f:
        shards = write_split(
            tmp_path / "s", f.metadata, f.value_types, _tensors_of(f), SplitLimits(max_tensors=2)
        )
    assert len(shards) == 4
    # every shard opens in llama.cpp's own Python reader, with the split keys and the right tensors
    for no, shard in enumerate(shards):
        r = gguf_py.GGUFReader(shard.path)
        assert int(r.fields["split.no"].parts[-1][0]) == no
        assert int(r.fields["split.count"].parts[-1][0]) == 4
        assert int(r.fields["split.tensors.count"].parts[-1][0]) == len(tensors)
        assert r.fields["split.no"].types == [gguf_py.GGUFValueType.UINT16]
        assert [t.name for t in r.tensors] == shard.tensors
        assert ("general.architecture" in r.fields) == (no == 0)
    with GGUFFile(shards[2].path) as whole:  # any part opens the set
        assert list(whole.tensors) == list(tensors)
        for name, data in tensors.items():
            assert whole.tensor_bytes(name).tobytes() == data.tobytes()
    plan, parts = merge_split(shards[0].path, tmp_path / "merged.gguf")
    assert parts == [s.path for s in shards]
    assert (tmp_path / "merged.gguf").read_bytes() == original.read_bytes()
    assert plan.size == original.stat().st_size


def test_existing_split_keys_are_replaced(tmp_path):
    _small_model(tmp_path / "m.gguf")
    with GGUFFile(tmp_path / "m.gguf") as f:
        shards = write_split(
            tmp_path / "a", f.metadata, f.value_types, _tensors_of(f), SplitLimits(max_tensors=4)
        )
    with GGUFFile(shards[0].path) as f:  # re-split a split set into three
        again = write_split(
            tmp_path / "b", f.metadata, f.value_types, _tensors_of(f), SplitLimits(max_tensors=3)
        )
    assert len(again) == 3
    with GGUFFile(again[0].path) as f:
        assert [f.metadata[k] for k in ("split.no", "split.count", "split.tensors.count")] == [0, 3, 7]
        assert list(f.metadata)[-3:] == ["split.no", "split.count", "split.tensors.count"]
    merge_split(again[0].path, tmp_path / "merged.gguf")
    assert (tmp_path / "merged.gguf").read_bytes() == (tmp_path / "m.gguf").read_bytes()


def test_shard_assignment_as_keep_split_uses_it(tmp_path):
    _small_model(tmp_path / "m.gguf", n=4)
    with GGUFFile(tmp_path / "m.gguf") as f:
        shards = write_split(tmp_path / "k", f.metadata, f.value_types, _tensors_of(f), shard_of=[0, 1, 1, 2])
        assert [s.tensors for s in shards] == [["t0.weight"], ["t1.weight", "t2.weight"], ["t3.weight"]]
        with pytest.raises(GGUFError, match="shard 1 gets no tensor"):
            plan_split(tmp_path / "x", f.metadata, f.value_types, _tensors_of(f), shard_of=[0, 2, 2, 2])


def test_existing_output_is_refused_unless_forced(tmp_path):
    _small_model(tmp_path / "m.gguf")
    with GGUFFile(tmp_path / "m.gguf") as f:
        args = (tmp_path / "s", f.metadata, f.value_types, _tensors_of(f), SplitLimits(max_tensors=4))
        shards = write_split(*args)
        before = shards[1].path.read_bytes()
        shards[0].path.unlink()
        shards[1].path.write_bytes(b"old")
        with pytest.raises(
            GGUFError, match=r"s-00002-of-00002.gguf: already exists; remove it or pass --force"
        ):
            write_split(*args)
        assert shards[1].path.read_bytes() == b"old"
        write_split(*args, force=True)
        assert shards[1].path.read_bytes() == before


def test_a_failure_leaves_no_shard_and_no_temporary_file(tmp_path):
    _small_model(tmp_path / "m.gguf")
    with GGUFFile(tmp_path / "m.gguf") as f:
        tensors = _tensors_of(f)

        def broken():
            raise OSError("disk full")

        tensors[5] = tensors[5]._replace(source=broken)  # in the second shard
        with pytest.raises(OSError, match="disk full"):
            write_split(tmp_path / "s", f.metadata, f.value_types, tensors, SplitLimits(max_tensors=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_merge_errors(tmp_path):
    _small_model(tmp_path / "m.gguf")
    with pytest.raises(GGUFError, match="not a split GGUF"):
        merge_split(tmp_path / "m.gguf", tmp_path / "out.gguf")
    with GGUFFile(tmp_path / "m.gguf") as f:
        shards = write_split(
            tmp_path / "s", f.metadata, f.value_types, _tensors_of(f), SplitLimits(max_tensors=3)
        )
    with pytest.raises(GGUFError, match="is one of the parts"):
        merge_split(shards[0].path, shards[1].path, force=True)
    (tmp_path / "out.gguf").write_bytes(b"x")
    with pytest.raises(GGUFError, match="out.gguf: already exists"):
        merge_split(shards[0].path, tmp_path / "out.gguf")
    # a renamed part: the set no longer holds split.tensors.count tensors
    shards[1].path.rename(tmp_path / "renamed.gguf")
    with pytest.raises(GGUFError, match="s-00002-of-00003.gguf: split file missing"):
        merge_split(shards[0].path, tmp_path / "out2.gguf")
    with pytest.raises(GGUFError, match="split.count says 3 parts but 1 were found"):
        merge_split(tmp_path / "renamed.gguf", tmp_path / "out2.gguf")
    with GGUFWriter(tmp_path / "wrong.gguf") as w:
        w.add("split.no", 0, ValueType.UINT16)
        w.add("split.count", 1, ValueType.UINT16)
        w.add("split.tensors.count", 5, ValueType.INT32)
        w.add_tensor("a", (4,), 0, np.zeros(4, np.float32))
    with pytest.raises(GGUFError, match="split.tensors.count says 5 tensors but the 1 parts found hold 1"):
        merge_split(tmp_path / "wrong.gguf", tmp_path / "out2.gguf")
    assert not (tmp_path / "out2.gguf").exists()


# ----- against llama-gguf-split -----


@pytest.mark.parametrize("flags", list(IK_SHARDS))
def test_shards_are_llama_gguf_splits_bytes(smollm2, tmp_path, flags):
    with GGUFFile(smollm2) as f:
        shards = write_split(tmp_path / "s", f.metadata, f.value_types, _tensors_of(f), IK_LIMITS[flags])
    assert [(s.path.stat().st_size, _sha256(s.path)) for s in shards] == IK_SHARDS[flags]
    merge_split(shards[0].path, tmp_path / "merged.gguf")
    assert _sha256(tmp_path / "merged.gguf") == _sha256(smollm2)
