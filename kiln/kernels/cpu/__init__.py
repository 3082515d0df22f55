"""Numba kernels for the CPU: quantized products that read the stored blocks directly."""
