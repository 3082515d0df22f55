"""Imatrix files: the `.dat` writer, the GGUF format (checked with llama.cpp's own `gguf`
package both ways), merging, and ik_llama.cpp's treatment of experts without data."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest

from kiln.errors import KilnError
from kiln.quants.imatrix import read_imatrix_dat, write_imatrix_dat
from kiln.quants.imatrix_files import output_format, read_imatrix, read_imatrix_stats, write_imatrix
from kiln.quants.imatrix_gguf import read_imatrix_gguf, write_imatrix_gguf
from kiln.quants.imatrix_stats import ImatrixData, ImatrixStats, legacy_entries, stats_from_dat


def _stats(seed: int = 0, n_expert: int = 4, missing: tuple[int, ...] = ()) -> ImatrixStats:
    """A dense entry (ncall 3) and an expert entry (4 x 8 columns) with some experts unused."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(5, 50, n_expert).astype(np.float64)
    sums = rng.random(n_expert * 8) * 10
    for e in missing:
        counts[e] = 0
        sums[e * 8 : (e + 1) * 8] = 0
    return ImatrixStats(
        entries={
            "blk.0.attn_q.weight": ImatrixData(rng.random(16) * 5, np.array([96.0]), 3),
            "blk.0.ffn_up_exps.weight": ImatrixData(sums, counts, 3),
        },
        chunks=3,
        chunk_size=32,
        datasets=["calib.txt"],
    )


def test_dat_writer_layout_and_reader(tmp_path):
    values = np.array([1.5, 2.25, -0.0, 3e-8], np.float32)
    p = tmp_path / "a.dat"
    write_imatrix_dat(p, [("blk.0.attn_q.weight", 7, values)], chunks=5, dataset="wiki.txt")
    raw = p.read_bytes()
    name = b"blk.0.attn_q.weight"
    expect = struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 7, 4) + values.tobytes()
    assert raw == expect + struct.pack("<ii", 5, 8) + b"wiki.txt"
    im = read_imatrix_dat(p)
    assert im.ncall("blk.0.attn_q.weight") == 7 and im.chunks == 5 and im.dataset == "wiki.txt"
    assert np.array_equal(im.entries["blk.0.attn_q.weight"].values, values)


def test_dat_values_are_means_times_ncall_and_round_trip(tmp_path):
    stats = _stats()
    p1, p2 = tmp_path / "one.dat", tmp_path / "two.dat"
    assert write_imatrix(p1, stats, "dat") == []
    im = read_imatrix_dat(p1)
    for name, d in stats.entries.items():
        want = d.sums.reshape(d.n_matrices, -1) / d.counts[:, None]
        assert im.ncall(name) == 3
        np.testing.assert_allclose(im.weights(name), want.reshape(-1), rtol=1e-6)
    # .dat -> sums and counts -> .dat gives the same bytes
    write_imatrix(p2, read_imatrix_stats(p1, tokens_per_call=32), "dat")
    assert p2.read_bytes() == p1.read_bytes()


def test_gguf_round_trip_and_layout_read_by_gguf_py(tmp_path):
    stats = _stats(missing=(2,))
    p = tmp_path / "m.gguf"
    warnings = write_imatrix_gguf(p, stats)
    assert len(warnings) == 1 and "ffn_up_exps" in warnings[0] and "partial data (75.00%)" in warnings[0]
    back = read_imatrix_gguf(p)
    assert back.chunks == 3 and back.chunk_size == 32 and back.datasets == ["calib.txt"]
    for name, d in stats.entries.items():
        np.testing.assert_array_equal(back.entries[name].sums, d.sums.astype(np.float32))
        np.testing.assert_array_equal(back.entries[name].counts, d.counts)
    r = gguf.GGUFReader(p)  # mainline llama.cpp's reader
    assert r.fields["general.type"].contents() == "imatrix"
    assert r.fields["imatrix.chunk_count"].contents() == 3 and r.fields["imatrix.chunk_size"].contents() == 32
    assert r.fields["imatrix.datasets"].contents() == ["calib.txt"]
    tensors = {t.name: t for t in r.tensors}
    assert sorted(tensors) == sorted(f"{n}.{s}" for n in stats.entries for s in ("in_sum2", "counts"))
    t = tensors["blk.0.ffn_up_exps.weight.in_sum2"]
    assert list(t.shape) == [8, 4]  # ggml order: columns, matrices
    np.testing.assert_array_equal(np.asarray(t.data).reshape(-1), stats.entries["blk.0.ffn_up_exps.weight"].sums.astype(np.float32))
    assert list(tensors["blk.0.ffn_up_exps.weight.counts"].shape) == [1, 4]


def test_reads_a_file_written_by_gguf_py(tmp_path):
    """The layout mainline's llama-imatrix writes, made with llama.cpp's own gguf writer
    (with the newer optional in_sum tensors, which kiln ignores)."""
    p = tmp_path / "mainline.gguf"
    w = gguf.GGUFWriter(p, arch=None)
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["a.txt", "b.txt"])
    w.add_uint32("imatrix.chunk_count", 10)
    w.add_uint32("imatrix.chunk_size", 512)
    sums = np.arange(12, dtype=np.float32).reshape(3, 4)  # 3 experts of 4 columns
    w.add_tensor("blk.1.ffn_down_exps.weight.in_sum2", sums)
    w.add_tensor("blk.1.ffn_down_exps.weight.in_sum", sums * 0.5)
    w.add_tensor("blk.1.ffn_down_exps.weight.counts", np.array([[2.0], [0.0], [4.0]], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    stats = read_imatrix_gguf(p)
    d = stats.entries["blk.1.ffn_down_exps.weight"]
    assert stats.datasets == ["a.txt", "b.txt"] and stats.chunks == 10 and stats.chunk_size == 512
    assert d.n_matrices == 3 and d.n_columns == 4 and d.ncall == 1
    im = read_imatrix(p)  # llama-quantize's weights: sums / counts, 1 for an expert without data
    np.testing.assert_allclose(im.weights("blk.1.ffn_down_exps.weight"),
                               np.concatenate([sums[0] / 2, np.ones(4), sums[2] / 4]))


def test_merge_weights_by_rows_and_dat_merges_by_calls(tmp_path):
    a, b = _stats(1), _stats(2)
    merged = ImatrixStats()
    merged.merge(a)
    merged.merge(b)
    name = "blk.0.ffn_up_exps.weight"
    np.testing.assert_allclose(merged.entries[name].sums, a.entries[name].sums + b.entries[name].sums)
    assert merged.chunks == 6 and merged.entries[name].ncall == 6 and merged.datasets == ["calib.txt"] * 2
    # two .dat files merge as llama-imatrix merges them: value sums, call counts add up
    pa, pb = tmp_path / "a.dat", tmp_path / "b.dat"
    write_imatrix(pa, a, "dat")
    write_imatrix(pb, b, "dat")
    m = read_imatrix_stats(pa, 32)
    m.merge(read_imatrix_stats(pb, 32))
    pm = tmp_path / "ab.dat"
    write_imatrix(pm, m, "dat")
    ia, ib, im = (read_imatrix_dat(x) for x in (pa, pb, pm))
    assert im.ncall(name) == ia.ncall(name) + ib.ncall(name)
    np.testing.assert_allclose(im.entries[name].values, ia.entries[name].values + ib.entries[name].values, rtol=1e-6)


def test_merge_of_different_models_raises():
    a = _stats()
    b = _stats()
    b.entries["blk.0.attn_q.weight"] = ImatrixData(np.ones(32), np.array([1.0]), 1)
    with pytest.raises(KilnError, match="blk.0.attn_q.weight has 32 values.*different models"):
        a.merge(b, "b.dat")


@pytest.mark.parametrize(
    "n_expert, missing, kept, note",
    [
        (8, (3,), False, "1 out of 8 experts are missing data - skipping"),
        (64, (1, 5), True, "2 out of 64 experts are missing data Storing **but be aware**"),
        (64, (1, 5, 9), False, "3 out of 64 experts are missing data - skipping"),  # round(3.2) = 3
    ],
)
def test_experts_without_data(n_expert, missing, kept, note):
    stats = _stats(n_expert=n_expert, missing=missing)
    out = legacy_entries(stats)
    name = "blk.0.ffn_up_exps.weight"
    share = 100.0 * (n_expert - len(missing)) / n_expert
    assert out.warnings[0] == f"entry '{name:>40}' has partial data ({share:.2f}%) {note}"
    stored = dict((n, v) for n, _, v in out.entries)
    assert (name in stored) == kept
    if kept:
        v = stored[name].reshape(n_expert, 8)
        assert (v[list(missing)] == 3).all()  # weight 1 (value ncall) for the experts without data
        assert len(out.warnings) == 1
    else:
        assert out.warnings[-1] == "warning: storing only 1 out of 2 entries"


def test_entry_without_any_data_is_skipped(tmp_path):
    stats = _stats(missing=(0, 1, 2, 3))
    out = legacy_entries(stats)
    assert out.warnings[0] == f"entry '{'blk.0.ffn_up_exps.weight':>40}' has no data - skipping"
    stats.entries.pop("blk.0.attn_q.weight")
    with pytest.raises(KilnError, match="no imatrix entry has data"):
        write_imatrix(tmp_path / "x.dat", stats, "dat")


def test_dat_to_stats_needs_positive_calls(tmp_path):
    p = tmp_path / "z.dat"
    write_imatrix_dat(p, [("w", 0, np.ones(4))], 1, "")
    with pytest.raises(KilnError, match="call count 0"):
        stats_from_dat(read_imatrix_dat(p), 512)


def test_output_format_and_bad_gguf(tmp_path):
    assert output_format("x.gguf") == "gguf" and output_format("x.dat") == "dat" and output_format("x") == "dat"
    assert output_format("x.gguf", "dat") == "dat"
    with pytest.raises(KilnError, match="format 'csv'"):
        output_format("x", "csv")
    model = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(model, arch="llama")
    w.add_tensor("blk.0.attn_q.weight", np.ones((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(KilnError, match="model file"):
        read_imatrix(model)
    half = tmp_path / "half.gguf"
    w = gguf.GGUFWriter(half, arch=None)
    w.add_type("imatrix")
    w.add_tensor("w.in_sum2", np.ones((1, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(KilnError, match="entry w lacks its .counts tensor"):
        read_imatrix_gguf(half)
