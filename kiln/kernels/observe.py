"""The activation observer: one optional hook that sees the input of every weight product.

`kiln imatrix` installs an observer to collect, per weight, the squared activations of
its input columns. While one is installed, the products in `dispatch` call it before
computing:

    observer(name, x, expert, n_matrices)

- `name`: the weight's tensor name (`QTensor.name`, e.g. blk.3.attn_q.weight);
- `x`: the input activations: [n_tokens, n_in] for a matrix or one expert, or
  [n_tokens, n_head, n_in] for a per-head product (MLA's attn_k_b / attn_v_b);
- `expert`: the expert index for the 3D expert tensors (x then holds only the tokens
  routed to that expert), else None;
- `n_matrices`: the number of experts of the tensor (1 for a matrix, n_head for a
  per-head product).

With no observer installed the cost in `dispatch` is one global lookup per product.
Weights passed as plain torch tensors (the per-head MLA matrices) have no name of their
own: `name_tensor` attaches one, looked up by the tensor's identity.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch

Observer = Callable[[str, torch.Tensor, "int | None", int], None]

OBSERVER: Observer | None = None
_TENSOR_NAMES: dict[int, tuple[torch.Tensor, str]] = {}


def install(observer: Observer | None) -> None:
    """Install `observer` (None removes it). One at a time: a second install replaces the first."""
    global OBSERVER
    OBSERVER = observer


@contextmanager
def observing(observer: Observer):
    """Install `observer` for the duration of a `with` block (and the tensor names given
    meanwhile with `name_tensor`)."""
    previous = OBSERVER
    install(observer)
    try:
        yield observer
    finally:
        install(previous)
        _TENSOR_NAMES.clear()


def name_tensor(t: torch.Tensor, name: str) -> None:
    """Give a plain torch weight a name for the observer (kept until `observing` ends)."""
    _TENSOR_NAMES[id(t)] = (t, name)  # the tensor itself is held so that its id stays unique


def tensor_name(t: torch.Tensor) -> str | None:
    entry = _TENSOR_NAMES.get(id(t))
    return entry[1] if entry is not None and entry[0] is t else None
