"""Quantization (float32 -> bytes) of IQ2_K, IQ3_K, IQ4_K, IQ5_K and IQ6_K, with optional importance weights."""

QUANTIZERS: dict = {}
