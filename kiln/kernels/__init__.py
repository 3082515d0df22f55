"""Compute on (quantized) weights: the reference path (dequantize + torch) that every fast
kernel is tested against, and `dispatch`, which picks an implementation by device and type."""
