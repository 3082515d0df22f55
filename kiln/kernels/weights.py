"""`QTensor`: a weight as it lies in the file (raw bytes + ggml type + ggml shape).

Kernels take QTensors so that each can work on the stored format directly;
the reference path dequantizes once and keeps the float copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..quants import dequantize, quant_type, quantize


@dataclass(eq=False)
class QTensor:
    """A tensor in its stored format. `shape` is ggml order (row length first)."""

    name: str
    raw: np.ndarray  # uint8, possibly a view of a mapped file
    type_id: int
    shape: tuple[int, ...]
    _dense: dict = field(default_factory=dict, repr=False)

    @property
    def type_name(self) -> str:
        return quant_type(self.type_id).name

    @property
    def torch_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))

    @property
    def nbytes(self) -> int:
        return int(self.raw.size)

    def dequantize(self) -> np.ndarray:
        """Float32 values in torch order (a fresh array)."""
        return dequantize(self.type_id, self.raw, self.shape, self.name)

    def dense(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dequantized tensor, computed once per dtype and kept."""
        t = self._dense.get(dtype)
        if t is None:
            t = torch.from_numpy(self.dequantize())
            if t.dtype != dtype:
                t = t.to(dtype)
            self._dense[dtype] = t
        return t

    def matrix(self, i: int) -> torch.Tensor:
        """The i-th 2D matrix of a 3D tensor (an expert), float32 [out, in]; dequantized on
        first use and kept, so experts that are never routed to are never expanded."""
        if len(self.shape) != 3:
            raise ValueError(f"{self.name} is not a 3D tensor")
        key = ("matrix", i)
        t = self._dense.get(key)
        if t is None:
            per = self.nbytes // self.shape[2]
            raw = self.raw.reshape(-1)[i * per : (i + 1) * per]
            t = torch.from_numpy(dequantize(self.type_id, raw, self.shape[:2], f"{self.name}[{i}]"))
            self._dense[key] = t
        return t

    @classmethod
    def from_float(cls, name: str, values: torch.Tensor, type_name: str = "F32") -> QTensor:
        """A tensor made at load time (torch order values), stored in `type_name`."""
        x = values.detach().float().contiguous().numpy()
        raw = quantize(type_name, x, None, name)
        return cls(name, raw, quant_type(type_name).id, tuple(reversed(x.shape)))

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of a 2D tensor (an embedding lookup), as float32."""
        return self.dense()[ids]

    def drop_dense(self) -> None:
        self._dense.clear()
