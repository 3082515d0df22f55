"""Lookup tables of the non-linear 4-bit types handled in `kquants`.

Facts of the format, transcribed from ik_llama.cpp (commit 8337e4cd3):
`kvalues_iq4nl` in ggml/src/ggml-quants.c (the 16 grid points of IQ4_NL and
IQ4_XS) and `kvalues_mxfp4` in ggml/src/ggml-common.h (the E2M1 values of
MXFP4, doubled so that they are integers; the block scale is halved to match).
"""

from __future__ import annotations

import numpy as np

IQ4NL_VALUES = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32
)
"""IQ4_NL / IQ4_XS grid, indexed by a 4-bit code (exact as float32)."""

MXFP4_VALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)
"""E2M1 values times 2, indexed by a 4-bit code (exact as float32)."""
