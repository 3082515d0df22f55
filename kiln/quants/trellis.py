"""ik_llama.cpp's trellis quants IQ1_KT..IQ4_KT: values generated from a seed by an integer recurrence."""

DEQUANTIZERS: dict = {}
