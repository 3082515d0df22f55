"""Open a model file and hand its tensors to the model as `QTensor`s.

With mmap (the default) a tensor's bytes stay a view of the mapped file until
a kernel needs them; `--no-mmap` copies each tensor into memory at load.
Every tensor named by the model must exist and have a type kiln can use;
tensors the model never asks for are never touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..gguf import GGUFFile
from ..kernels import dispatch
from ..kernels.weights import QTensor
from ..quants import quant_type

log = logging.getLogger("kiln.runtime")


class GGUFTensors:
    """The `TensorSource` of a GGUF file; remembers which tensors were used."""

    def __init__(self, gguf: GGUFFile, copy: bool = False):
        self.gguf = gguf
        self.copy = copy
        self.used: set[str] = set()
        self._cache: dict[str, QTensor] = {}

    def get(self, name: str, required: bool = True) -> QTensor | None:
        if name in self._cache:
            return self._cache[name]
        info = self.gguf.tensors.get(name)
        if info is None:
            if required:
                raise ModelError(
                    f"{self.gguf.path}: tensor {name} is missing; the file is incomplete or not a "
                    f"{self.gguf.architecture} model kiln understands: convert it again"
                )
            return None
        qt = quant_type(info.type_id)
        if not qt.can_dequantize:
            raise ModelError(
                f"{self.gguf.path}: tensor {name} has type {qt.name}, which this version of kiln cannot compute "
                "with yet; requantize it (kiln quantize) to a supported type"
            )
        raw = self.gguf.tensor_bytes(name)
        if self.copy:
            raw = np.array(raw)
        t = QTensor(name, raw, info.type_id, info.shape)
        self._cache[name] = t
        self.used.add(name)
        return t


def open_model_file(path: str | Path) -> GGUFFile:
    return GGUFFile(path)


def repack_for_cpu(tensors: GGUFTensors) -> int:
    """Prepare every loaded weight for the CPU kernels now (-rtr): row-interleaved layouts
    are unpacked to the plain one the kernels read. Returns how many weights have a kernel."""
    n = 0
    for t in tensors._cache.values():
        if len(t.shape) >= 2 and dispatch.cpu_weight(t) is not None:
            n += 1
    log.info("run-time repack: %d weight tensors ready for the CPU kernels", n)
    return n
