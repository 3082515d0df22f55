"""Row-interleaved layouts (_R4, _R8): several rows' blocks stored side by side; repack to and
from the plain layout, and dequantize through it."""

DEQUANTIZERS: dict = {}
