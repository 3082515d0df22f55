"""Split a GGUF model into shards and merge shards back, as llama-gguf-split does.

A split set is `PREFIX-00001-of-0000N.gguf` ... `PREFIX-0000N-of-0000N.gguf`.
The first shard holds all the metadata; every shard holds `split.no` (0-based,
UINT16), `split.count` (UINT16) and `split.tensors.count` (INT32, the tensors of
the whole set), and the tensors are spread over the shards in their order.

`plan_split` decides the shards exactly as llama-gguf-split does:

- by tensor count (`max_tensors`, its default 128): a new shard starts at every
  tensor whose index is a multiple of `max_tensors`;
- by size (`max_bytes`): a new shard starts at the tensor that would bring the
  shard's tensor data (each tensor padded to 32 bytes; the header does not
  count) past `max_bytes`; a tensor larger than the limit gets a shard of its
  own, except as the very first tensor of a shard, where it is an error;
- `no_tensor_first_split`: the first shard holds only the metadata.

Nothing is read for planning; `write_split` then writes the shards under
temporary names and renames them all at the end, so a failure leaves no shard.
`merge_split` writes a split set back as one file, with the metadata of the
first shard minus the `split.*` keys: splitting a file and merging the shards
gives back the same bytes. (llama-gguf-split's merge keeps `split.no = 0`,
`split.count = 0` and `split.tensors.count`; otherwise the two agree byte for
byte.) The first shard keeps the alignment the metadata asks for
(`general.alignment`); the others have the default 32.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import GGUFError
from .constants import (
    GGUF_DEFAULT_ALIGNMENT,
    KEY_ALIGNMENT,
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS_COUNT,
    ValueType,
)
from .reader import GGUFFile, split_path
from .types import ggml_type
from .writer import GGUFWriter, TensorSource

DEFAULT_MAX_TENSORS = 128  # llama-gguf-split's default --split-max-tensors
SPLIT_KEYS = (KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS_COUNT)


class SplitTensor(NamedTuple):
    """One tensor to write: ggml shape (row length first), type id, and its bytes (see GGUFWriter)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    source: TensorSource | None = None


@dataclass(frozen=True)
class SplitLimits:
    """When to start a new shard: at most `max_bytes` of tensor data or `max_tensors` tensors.

    At most one of the two; with neither, `max_tensors` is llama-gguf-split's default 128.
    """

    max_bytes: int | None = None
    max_tensors: int | None = None
    no_tensor_first_split: bool = False

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_tensors is not None:
            raise GGUFError("give either a maximum size or a maximum tensor count per shard, not both")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise GGUFError(f"maximum shard size {self.max_bytes} bytes: give a positive size")
        if self.max_tensors is not None and self.max_tensors <= 0:
            raise GGUFError(f"maximum tensors per shard {self.max_tensors}: give a positive count")


@dataclass
class Shard:
    """One planned shard. `size` is the exact file size; llama-gguf-split prints
    `header_size + data_size` (tensor bytes without padding) as its total_size."""

    path: Path
    tensors: list[str]
    size: int
    header_size: int
    data_size: int
    _writer: GGUFWriter | None = field(default=None, repr=False, compare=False)

    @property
    def ik_total_size(self) -> int:
        return self.header_size + self.data_size


def split_prefix(out: str | os.PathLike) -> str:
    """The prefix of the shard names for an output name: a trailing `.gguf` is dropped, as
    llama-gguf-split does (`out.gguf` and `out` both give `out-00001-of-0000N.gguf`)."""
    s = os.fspath(out)
    return s[: -len(".gguf")] if s.endswith(".gguf") else s


def assign_shards(
    sizes: Sequence[int], limits: SplitLimits, names: Sequence[str] | None = None
) -> list[list[int]]:
    """The tensor indices of each shard, given each tensor's data size in bytes, as
    llama-gguf-split decides them."""
    n = len(sizes)
    max_tensors = limits.max_tensors or DEFAULT_MAX_TENSORS
    shards: list[list[int]] = [[]]
    if limits.no_tensor_first_split:
        shards.append([])
    current = 0  # tensor data in the current shard, each tensor padded as llama-gguf-split pads
    for i, size in enumerate(sizes):
        padded = _padded(size, GGUF_DEFAULT_ALIGNMENT)
        if limits.max_bytes is not None:
            new_shard = current + padded > limits.max_bytes
        else:
            new_shard = 0 < i < n and i % max_tensors == 0
        if new_shard:
            if not shards[-1]:
                name = names[i] if names is not None else f"#{i}"
                raise GGUFError(
                    f"tensor {name} alone takes {padded} bytes, more than the maximum shard size of "
                    f"{limits.max_bytes} bytes, so a shard would hold no tensor; give a larger size"
                )
            shards.append([])
            current = padded
        else:
            current += padded
        shards[-1].append(i)
    return shards


def plan_split(
    prefix: str | os.PathLike,
    metadata: dict[str, Any],
    value_types: dict[str, tuple] | None,
    tensors: Iterable[SplitTensor | tuple],
    limits: SplitLimits | None = None,
    *,
    shard_of: Sequence[int] | None = None,
) -> list[Shard]:
    """The shards `write_split` would write (paths, tensor names, sizes), without writing or
    reading anything.

    `metadata` goes into the first shard, in its order and with the types in `value_types`
    (key -> (ValueType, item type), as GGUFFile.value_types; a missing key's type is inferred);
    any `split.*` keys in it are replaced. `tensors` are written in the order given.
    `shard_of` (one shard index per tensor, starting at 0, each shard used) replaces the
    limits: llama-quantize's --keep-split puts each tensor in the shard of its input.
    """
    items = [SplitTensor(*t) for t in tensors]
    sizes = [_tensor_bytes(t) for t in items]
    names = [t.name for t in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise GGUFError(f"tensor {dup} is given twice")
    if shard_of is not None:
        groups = _groups_from_assignment(shard_of, len(items))
    else:
        groups = assign_shards(sizes, limits or SplitLimits(), names)
    count = len(groups)
    if count > 99999:
        raise GGUFError(f"{count} shards: split file names have room for 99999; give a larger limit")
    prefix = split_prefix(prefix)
    base = {k: v for k, v in metadata.items() if k not in SPLIT_KEYS}
    types = value_types or {}
    shards = []
    for no, group in enumerate(groups):
        path = split_path(prefix, no + 1, count)
        writer = GGUFWriter(path)
        if no == 0:
            for key, value in base.items():
                vtype, item_type = types.get(key, (None, None))
                writer.add(key, value, vtype, item_type)
            # set after the keys so that general.alignment keeps its place among them
            writer.alignment = int(base.get(KEY_ALIGNMENT, GGUF_DEFAULT_ALIGNMENT))
        writer.add(KEY_SPLIT_NO, no, ValueType.UINT16)
        writer.add(KEY_SPLIT_COUNT, count, ValueType.UINT16)
        writer.add(KEY_SPLIT_TENSORS_COUNT, len(items), ValueType.INT32)
        for i in group:
            t = items[i]
            writer.add_tensor(t.name, t.shape, t.type_id, t.source)
        size = writer.planned_size()
        padded_data = sum(_padded(sizes[i], writer.alignment) for i in group)
        shards.append(
            Shard(
                path,
                [names[i] for i in group],
                size,
                size - padded_data,
                sum(sizes[i] for i in group),
                writer,
            )
        )
    return shards


def write_split(
    prefix: str | os.PathLike,
    metadata: dict[str, Any],
    value_types: dict[str, tuple] | None,
    tensors: Iterable[SplitTensor | tuple],
    limits: SplitLimits | None = None,
    *,
    shard_of: Sequence[int] | None = None,
    force: bool = False,
    progress: Callable[[Shard], None] | None = None,
) -> list[Shard]:
    """Write the shards that `plan_split` plans; returns them.

    Every tensor's `source` is read when its turn comes. The shards are written under
    temporary names beside their targets and renamed when all are complete. An existing
    shard of the same name is an error unless `force`. `progress(shard)` is called before
    each shard is written.
    """
    shards = plan_split(prefix, metadata, value_types, tensors, limits, shard_of=shard_of)
    check_outputs([s.path for s in shards], force)
    done: list[tuple[Path, Path]] = []
    try:
        for shard in shards:
            if progress is not None:
                progress(shard)
            shard.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=shard.path.name + ".", suffix=".part", dir=shard.path.parent)
            os.close(fd)
            done.append((Path(tmp), shard.path))
            assert shard._writer is not None
            shard._writer.path = Path(tmp)
            shard._writer.write()
            shard._writer = None
        for tmp, final in done:
            _default_permissions(tmp)
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in done:
            if tmp.exists():
                tmp.unlink()
        raise
    return shards


def merge_split(
    first: str | os.PathLike,
    out: str | os.PathLike,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: Callable[[Path], None] | None = None,
) -> tuple[Shard, list[Path]]:
    """Merge the split set that `first` belongs to into one file `out`.

    Returns the merged file's plan (a Shard with its size) and the parts read. With
    `dry_run` nothing is written. `progress(out)` is called before writing.
    """
    out = Path(out)
    with GGUFFile(first) as f:
        parts = f.paths
        count = f.metadata.get(KEY_SPLIT_COUNT)
        if count is None or count < 1:
            raise GGUFError(
                f"{f.path}: not a split GGUF (no {KEY_SPLIT_COUNT} key), nothing to merge; "
                "give the first shard, NAME-00001-of-0000N.gguf"
            )
        expected = f.metadata.get(KEY_SPLIT_TENSORS_COUNT)
        if expected is not None and expected != len(f.tensors):
            raise GGUFError(
                f"{f.path}: {KEY_SPLIT_TENSORS_COUNT} says {expected} tensors but the {len(parts)} parts found "
                f"hold {len(f.tensors)}; name the parts NAME-0000i-of-{count:05d}.gguf and put them side by side"
            )
        resolved = {p.resolve() for p in parts}
        if out.resolve() in resolved:
            raise GGUFError(f"{out}: is one of the parts being merged; give another output name")
        writer = GGUFWriter(out)
        for key, value in f.metadata.items():
            if key not in SPLIT_KEYS:
                vtype, item_type = f.value_types[key]
                writer.add(key, value, vtype, item_type)
        writer.alignment = f.alignment
        for name, info in f.tensors.items():
            writer.add_tensor(name, info.shape, info.type_id, lambda name=name: f.tensor_bytes(name))
        size = writer.planned_size()
        data = sum(info.nbytes or 0 for info in f.tensors.values())
        padded = sum(_padded(info.nbytes or 0, f.alignment) for info in f.tensors.values())
        plan = Shard(out, list(f.tensors), size, size - padded, data)
        if not dry_run:
            check_outputs([out], force)
            if progress is not None:
                progress(out)
            writer.write()
            _default_permissions(out)
    return plan, parts


def check_outputs(paths: Sequence[Path], force: bool) -> None:
    """Refuse to overwrite existing outputs unless `force`; a directory in the way is always an error."""
    for p in paths:
        if p.is_dir():
            raise GGUFError(f"{p}: is a directory; give a file name for the output")
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise GGUFError(f"{existing[0]}: already exists{more}; remove it or pass --force to overwrite")


def _default_permissions(path: Path) -> None:
    """Give a file the permissions a plain open() would (temporary files are private, 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _groups_from_assignment(shard_of: Sequence[int], n: int) -> list[list[int]]:
    if len(shard_of) != n:
        raise GGUFError(f"shard assignment has {len(shard_of)} entries for {n} tensors")
    count = max(shard_of, default=0) + 1
    groups: list[list[int]] = [[] for _ in range(count)]
    for i, s in enumerate(shard_of):
        if s < 0:
            raise GGUFError(f"shard assignment: tensor #{i} goes to shard {s}; shards are numbered from 0")
        groups[s].append(i)
    empty = [i for i, g in enumerate(groups) if not g and i > 0]
    if empty:
        raise GGUFError(
            f"shard assignment: shard {empty[0]} gets no tensor; shards must be numbered without gaps"
        )
    return groups


def _tensor_bytes(t: SplitTensor) -> int:
    gt = ggml_type(t.type_id)
    if gt is None:
        raise GGUFError(f"cannot write tensor {t.name}: unknown type id {t.type_id}")
    return gt.tensor_bytes(t.shape)


def _padded(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment
