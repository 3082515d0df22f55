"""Collecting an importance matrix: the activation observer that `kiln imatrix` installs.

For every weight product the model computes (kiln/kernels/observe.py), the collector adds
the squares of the input activations to the weight's entry, column by column, as
ik_llama.cpp's llama-imatrix does for its mul_mat / mul_mat_id nodes:

- a matrix: one slice of n_in sums, counted once per token;
- a 3D expert tensor: one slice per expert; an expert's product sees only the tokens
  routed to it, so only those are added and counted there;
- a per-head MLA product (attn_k_b, attn_v_b under -mla 1, 2, 3): one slice per head, as
  ik_llama.cpp stores it for its 3D tensors; when the file holds the tensor as one 2D
  matrix, the heads are summed into one slice instead (`fold_heads`), so that the entry
  has the size llama-quantize expects for that tensor;
- which products count (ik_llama.cpp's rules): only weights named blk.* (and the MTP
  projections), output.weight too with --process-output; a matrix product over fewer
  than 16 tokens is skipped (expert products never are); attn_kv_b under -mla 2/3 is
  skipped, since there it multiplies the cached latents of the whole context (ik_llama.cpp
  sees an f16 cache there and skips it too).

`end_pass()` after each forward pass (micro-batch) adds one call to every entry the pass
touched: llama-imatrix's `ncall`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import KilnError, NumericalError
from ..kernels import observe
from ..quants.imatrix_stats import ImatrixData, ImatrixStats

MIN_ROWS = 16  # llama-imatrix ignores matrix products over fewer tokens
MTP_PROJECTIONS = ("mtp_pre_proj.weight", "mtp_post_proj.weight")


def tensor_filter(process_output: bool, output_name: str = "output.weight", mla: int = 3) -> Callable[[str], bool]:
    """Which weights' inputs are collected (llama-imatrix's choice)."""

    def wanted(name: str) -> bool:
        if name.startswith("blk."):
            return not (mla >= 2 and name.endswith(".attn_kv_b.weight"))
        return name in MTP_PROJECTIONS or (process_output and name == output_name)

    return wanted


class ImatrixCollector:
    """The observer: accumulates into `stats` (which may already hold merged files' data)."""

    def __init__(self, wanted: Callable[[str], bool], stats: ImatrixStats | None = None, fold_heads=()):
        self.wanted = wanted
        self.stats = stats if stats is not None else ImatrixStats()
        self.fold_heads = set(fold_heads)  # per-head tensors stored 2D in the file
        self._touched: set[str] = set()
        self.n_observed = 0  # products collected so far

    def __call__(self, name: str, x: torch.Tensor, expert: int | None, n_matrices: int) -> None:
        if expert is None and (x.shape[0] < MIN_ROWS or not self.wanted(name)):
            return
        x = x.detach()
        if not torch.isfinite(x).all():
            raise NumericalError(f"NaN or Inf in the input of {name}: the model's activations are out of range")
        if expert is not None:
            n_col = x.shape[-1]
            sq = x.reshape(-1, n_col).double().square().sum(0).numpy()
            d = self._entry(name, n_matrices, n_col)
            d.sums[expert * n_col : (expert + 1) * n_col] += sq
            d.counts[expert] += x.shape[0]
        elif x.dim() == 3 and name not in self.fold_heads:  # per head: [n, h, d]
            n, h, n_col = x.shape
            d = self._entry(name, h, n_col)
            d.sums += x.double().square().sum(0).reshape(-1).numpy()
            d.counts += n
        else:
            n_col = x.shape[-1]
            x2 = x.reshape(-1, n_col)
            d = self._entry(name, 1, n_col)
            d.sums += x2.double().square().sum(0).numpy()
            d.counts += x2.shape[0]
        self._touched.add(name)
        self.n_observed += 1

    def end_pass(self) -> None:
        """One forward pass is over: one more call for each entry it fed."""
        for name in self._touched:
            self.stats.entries[name].ncall += 1
        self._touched.clear()

    def _entry(self, name: str, n_matrices: int, n_col: int) -> ImatrixData:
        d = self.stats.entries.get(name)
        size = n_matrices * n_col
        if d is None:
            d = self.stats.entries[name] = ImatrixData(np.zeros(size), np.zeros(n_matrices))
        elif d.sums.size != size:
            raise KilnError(
                f"imatrix entry {name} has {d.sums.size} values but the model's product needs {size}: "
                "the merged imatrix (--in-file) was computed for another model"
            )
        elif d.counts.size != n_matrices:
            if d.counts.size != 1:
                raise KilnError(f"imatrix entry {name} has {d.counts.size} experts but the model has {n_matrices}")
            d.counts = np.full(n_matrices, d.counts[0])  # a .dat entry: one count for all experts
        return d


def name_per_head_weights(model) -> dict[str, torch.Tensor]:
    """Give the model's per-head MLA matrices (plain tensors) their file names for the
    observer; returns {name: tensor}. Call inside `observe.observing`."""
    named = {}
    for block in getattr(model, "blocks", []):
        attn = getattr(block, "attn", None)
        layer = getattr(attn, "layer", None)
        for attr, kind in (("k_b", "attn_k_b"), ("v_b", "attn_v_b")):
            t = getattr(attn, attr, None)
            if isinstance(t, torch.Tensor) and layer is not None:
                name = f"blk.{layer}.{kind}.weight"
                observe.name_tensor(t, name)
                named[name] = t
    return named
