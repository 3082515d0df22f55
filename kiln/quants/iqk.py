"""ik_llama.cpp's IQK non-linear quants: IQ2_K..IQ6_K, IQ2_KS, IQ2_KL, IQ3_KS, IQ4_KS,
IQ4_KSS, IQ5_KS, and the ternary IQ1_BN, IQ2_BN.

The family is split by block shape: `iqk_k` (f16 block scale, 16-value sub-blocks),
`iqk_ks` (row scale, 32-value sub-blocks), `iqk_bn` (ternary); `iqk_tables` holds the value
grids and `iqk_common` the shared steps. Dequantization is bit-identical to ik_llama.cpp's.
"""

from __future__ import annotations

from . import iqk_bn, iqk_k, iqk_ks

DEQUANTIZERS = {**iqk_k.DEQUANTIZERS, **iqk_ks.DEQUANTIZERS, **iqk_bn.DEQUANTIZERS}
