"""Block decoders called through a function address, so that one compiled kernel serves
every type.

Each type's decoder (`decoders.py`) is compiled once as a C-callable function
(`decoder_address(name)`); the generic kernels (`matmul.py`, `block_step.py`) take that
address as a plain integer and call it per weight row with `call_decoder`. An integer
argument costs Numba no type dispatch and no recompilation, so the kernels compile once
(and are cached on disk), and a per-layer step can mix types freely. A call per row of
hundreds of values costs a few nanoseconds.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, types
from numba.extending import intrinsic

from ...gguf.types import GGML_TYPES_BY_NAME
from .decoders import DECODERS
from .simd import _data_pointer

_C_SIGNATURE = types.int64(
    types.CPointer(types.uint8),
    types.int64,
    types.CPointer(types.int8),
    types.CPointer(types.float32),
    types.CPointer(types.float32),
)
_compiled: dict[str, object] = {}  # type name -> its cfunc (kept alive: the address is its code)


def _c_decoder(decode, block_size: int, type_size: int):
    @cfunc(_C_SIGNATURE, fastmath=True)
    def c_decode(row_p, K, q_p, sw_p, mw_p):
        row = carray(row_p, (K // block_size * type_size,))
        return decode(row, K, carray(q_p, (K,)), carray(sw_p, (K // 4,)), carray(mw_p, (K // 16,)))

    return c_decode


def decoder_address(type_name: str) -> int:
    """The address of the C-callable decoder of one type (compiled on first use)."""
    c = _compiled.get(type_name)
    if c is None:
        t = GGML_TYPES_BY_NAME[type_name]
        c = _compiled[type_name] = _c_decoder(DECODERS[type_name], t.block_size, t.type_size)
    return c.address


def _emit_call(context, builder, signature, args, row_pointer):
    """The call of the decoder at args[0] on the row at row_pointer (an i8*), with args[3]
    (K) and the buffers args[4:7]."""
    i8p = ir.IntType(8).as_pointer()
    f32p = ir.FloatType().as_pointer()
    fnty = ir.FunctionType(ir.IntType(64), [i8p, ir.IntType(64), i8p, f32p, f32p])
    fn = builder.inttoptr(args[0], fnty.as_pointer())
    zero = ir.Constant(ir.IntType(64), 0)
    at = signature.args
    buffers = [
        _data_pointer(context, builder, at[4], args[4], zero, ir.IntType(8)),
        _data_pointer(context, builder, at[5], args[5], zero, ir.FloatType()),
        _data_pointer(context, builder, at[6], args[6], zero, ir.FloatType()),
    ]
    return builder.call(fn, [row_pointer, args[3], *buffers])


@intrinsic
def call_decoder(typingctx, address, raw, offset, K, q, sw, mw):
    """decode(raw[offset:], K, q, sw, mw) through the decoder at `address`; returns its
    layout flags (`decode_common.py`)."""
    sig = types.int64(types.int64, raw, types.int64, types.int64, q, sw, mw)

    def codegen(context, builder, signature, args):
        row = _data_pointer(context, builder, signature.args[1], args[1], args[2], ir.IntType(8))
        return _emit_call(context, builder, signature, args, row)

    return sig, codegen


@intrinsic
def call_decoder_at(typingctx, address, data, offset, K, q, sw, mw):
    """As call_decoder, the row's bytes at memory address data + offset (an integer: a
    per-layer step holds the addresses of many weights in one int64 array)."""
    sig = types.int64(types.int64, types.int64, types.int64, types.int64, q, sw, mw)

    def codegen(context, builder, signature, args):
        row = builder.inttoptr(builder.add(args[1], args[2]), ir.IntType(8).as_pointer())
        return _emit_call(context, builder, signature, args, row)

    return sig, codegen


def readonly(raw: np.ndarray) -> np.ndarray:
    """A read-only flat uint8 view (one array type for every weight: one compiled kernel)."""
    view = np.asarray(raw).reshape(-1).view()
    view.setflags(write=False)
    return view
