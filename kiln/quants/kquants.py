"""K-quants (Q2_K..Q6_K, Q8_K: 256-value super-blocks with 6-bit or 8-bit sub-block scales)
and the other scalar-grid types Q6_0, Q8_KV, MXFP4, IQ4_NL, IQ4_XS."""

DEQUANTIZERS: dict = {}
