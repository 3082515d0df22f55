"""Quantization (float32 -> bytes) of the trellis types IQ1_KT, IQ2_KT, IQ3_KT and IQ4_KT, with optional importance weights."""

QUANTIZERS: dict = {}
