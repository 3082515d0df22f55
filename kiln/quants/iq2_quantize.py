"""Quantization (float32 -> bytes) of IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS and IQ2_S, with optional importance weights."""

QUANTIZERS: dict = {}
