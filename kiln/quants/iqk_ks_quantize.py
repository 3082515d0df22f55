"""Quantization (float32 -> bytes) of IQ2_KS, IQ2_KL, IQ3_KS, IQ4_KS, IQ4_KSS and IQ5_KS, with optional importance weights."""

QUANTIZERS: dict = {}
