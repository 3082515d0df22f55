"""The shard-size flags that `kiln split` and `kiln convert` share: `--split-max-size 50G`,
`--split-max-tensors N`, read as llama-gguf-split reads them (M = 10^6 bytes, G = 10^9 bytes)."""

from __future__ import annotations

import re
from decimal import Decimal

from ..errors import OptionError
from ..gguf.split import SplitLimits

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([MG])B?\s*$", re.IGNORECASE)
_UNITS = {"M": 10**6, "G": 10**9}


def parse_size(text: str, flag: str = "--split-max-size") -> int:
    """`500M` -> 500_000_000, `50G` -> 50_000_000_000, `1.5G` -> 1_500_000_000 bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise OptionError(
            f"{flag} {text!r}: give a size with its unit, like 500M or 50G (M = 10^6 bytes, G = 10^9 bytes)"
        )
    n = int(Decimal(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise OptionError(f"{flag} {text!r}: the size must be positive")
    return n


def split_limits(
    max_size: str | None, max_tensors: int | None, no_tensor_first_split: bool = False
) -> SplitLimits:
    """SplitLimits from the flags' values (None: flag not given)."""
    if max_size is not None and max_tensors is not None:
        raise OptionError("give either --split-max-size or --split-max-tensors, not both")
    if max_tensors is not None and max_tensors <= 0:
        raise OptionError(f"--split-max-tensors {max_tensors}: give a positive number of tensors per shard")
    max_bytes = parse_size(max_size) if max_size is not None else None
    return SplitLimits(
        max_bytes=max_bytes, max_tensors=max_tensors, no_tensor_first_split=no_tensor_first_split
    )


def add_split_flags(parser, tensors_flag: bool = True) -> None:
    """Add --split-max-size (and --split-max-tensors) to an argparse parser."""
    parser.add_argument(
        "--split-max-size",
        dest="split_max_size",
        metavar="N(M|G)",
        help="start a new shard before the tensor data passes this size, e.g. 500M or 50G",
    )
    if tensors_flag:
        parser.add_argument(
            "--split-max-tensors",
            dest="split_max_tensors",
            type=int,
            metavar="N",
            help="at most N tensors per shard (default 128 when splitting without --split-max-size)",
        )
