"""Quantization (float32 -> bytes) of k-quants (Q2_K..Q6_K, Q8_K), IQ4_NL, IQ4_XS, MXFP4 and Q8_KV, with optional importance weights."""

QUANTIZERS: dict = {}
