"""Block-scaled fp8 checkpoints (DeepSeek V3/R1, Qwen3 FP8, ...) for `kiln convert`.

Such a checkpoint stores each quantized linear weight `W` (out x in) as
`float8_e4m3fn` next to `W_scale_inv`: float32, one value per block of
128 x 128 weights (`quantization_config.weight_block_size`), shape
(ceil(out / 128), ceil(in / 128)); the edge blocks are ragged. The real weight
is `W[i, j] * scale_inv[i // 128, j // 128]`, rounded to bf16, as DeepSeek's
own `fp8_cast_bf16.py` computes it. Everything else in the checkpoint (norms,
embeddings, the router) is stored unquantized.

`kiln convert` dequantizes each such weight while it reads it and converts the
bf16 result like any bf16 weight; the `_scale_inv` tensors are not written.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConvertError

SCALE_SUFFIX = "_scale_inv"
FP8_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
DEFAULT_BLOCK = (128, 128)


def is_fp8(dtype: str) -> bool:
    """True for a safetensors dtype string of a float8 type."""
    return dtype in FP8_DTYPES


def quantization(config: dict, source: str) -> tuple[int, int] | None:
    """The fp8 block size of a checkpoint whose config has quantization_config; None without one.

    Any other quantization method (GPTQ, AWQ, bitsandbytes, ...) is refused.
    """
    qc = config.get("quantization_config")
    if not qc:
        return None
    if not isinstance(qc, dict):
        raise ConvertError(f"{source}: quantization_config is not an object; check the config")
    method = qc.get("quant_method", "?")
    if method != "fp8":
        raise ConvertError(
            f"{source}: the checkpoint is quantized ({method}); kiln convert reads f32/f16/bf16 checkpoints and "
            "block-scaled fp8 ones (quant_method fp8); convert the original weights"
        )
    block = qc.get("weight_block_size", list(DEFAULT_BLOCK))
    if (
        not isinstance(block, (list, tuple))
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
    ):
        raise ConvertError(
            f"{source}: quantization_config.weight_block_size is {block!r}; expected two positive integers "
            "such as [128, 128]"
        )
    fmt = qc.get("fmt", "e4m3")
    if fmt not in ("e4m3", "e5m2"):
        raise ConvertError(
            f"{source}: quantization_config.fmt {fmt!r} is not an fp8 format kiln reads (e4m3, e5m2)"
        )
    return int(block[0]), int(block[1])


def scale_shape(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    """The shape of the `_scale_inv` of a weight of `shape`: one value per block, edge blocks ragged."""
    return math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1])


def check_pair(name: str, shape: tuple[int, ...], scale: tuple[int, ...], block: tuple[int, int]) -> None:
    """ConvertError unless `scale` is the scale shape of a 2-D fp8 weight of `shape`."""
    if len(shape) != 2:
        raise ConvertError(
            f"tensor {name}: an fp8 weight of shape {list(shape)}; kiln convert reads 2-D ones only"
        )
    want = scale_shape(shape, block)
    if tuple(scale) != want:
        raise ConvertError(
            f"tensor {name}{SCALE_SUFFIX} has shape {list(scale)}, but a {list(shape)} weight in "
            f"{block[0]}x{block[1]} blocks needs {list(want)}; check quantization_config.weight_block_size"
        )


def dequantize(
    w: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> torch.Tensor:
    """bf16 of `w * scale_inv` per block (float32 product, one rounding to bf16)."""
    rows, cols = w.shape
    s = scale_inv.to(torch.float32)
    s = s.repeat_interleave(block[0], dim=0)[:rows].repeat_interleave(block[1], dim=1)[:, :cols]
    return (w.to(torch.float32) * s).to(torch.bfloat16)
