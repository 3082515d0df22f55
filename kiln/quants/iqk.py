"""ik_llama.cpp's IQK non-linear quants: IQ2_K..IQ6_K, IQ2_KS, IQ2_KL, IQ3_KS, IQ4_KS, IQ4_KSS,
IQ5_KS, and the ternary IQ1_BN, IQ2_BN."""

DEQUANTIZERS: dict = {}
