"""`kiln convert`: a Hugging Face checkpoint directory to a GGUF file.

    convert("path/to/SmolLM2-135M-Instruct", "smollm2-f16.gguf", outtype="f16")

Reads config.json, the safetensors weights (one file or shards with
model.safetensors.index.json) and the tokenizer files, and writes the GGUF
file that llama.cpp's `convert_hf_to_gguf.py` writes for the same checkpoint:
the same tensor names, shapes, value transformations (llama's q/k rope
permutation, gemma's norm +1), tensor types (2-D weights in the chosen type,
1-D tensors and norms in F32) and metadata keys with the same value types.
Supported: LlamaForCausalLM (llama), Qwen2ForCausalLM (qwen2),
Qwen3ForCausalLM (qwen3), Gemma3ForCausalLM and the text part of
Gemma3ForConditionalGeneration (gemma3), and the Mixture-of-Experts models
DeepseekV2ForCausalLM and DeepseekV3ForCausalLM (deepseek2, MLA tensors in one
of three conventions, see `convert_moe`), Qwen3MoeForCausalLM (qwen3moe) and
Glm4MoeForCausalLM (glm4moe), written as ik_llama.cpp's converter writes them.
Block-scaled fp8 checkpoints (DeepSeek's own) are dequantized to bf16 while
read (`convert_fp8`).

Tensors are read one at a time while the file is written, so memory holds one
tensor, not the model (a MoE model's stacked experts are read, encoded and
written one expert at a time). `--outtype q8_0` quantizes the 2-D weights to
Q8_0 as llama.cpp's converter does (what it keeps in F32 stays F32; a weight
whose rows do not fill 32-value blocks falls back to F16). The tensors come in
the order of a single-file checkpoint (sorted by name) however the checkpoint
is sharded, so sharding does not change the output. `split_max_size` writes a
split set (`OUT-00001-of-0000N.gguf` ..., cut as `kiln split` cuts) through
`kiln.gguf.split`. The file is written under a temporary name and renamed when
complete. Details per part: `convert_arch`
(names, keys, transformations), `convert_moe` (the MoE architectures),
`convert_fp8` (fp8 checkpoints), `convert_vocab` (tokenizer), `convert_pretok`
(tokenizer.ggml.pre).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConvertError
from ..gguf import GGUFWriter, ValueType
from ..gguf.split import SplitLimits, SplitTensor, plan_split, split_prefix, write_split
from ..quants import quantize
from . import convert_moe
from .convert_arch import (
    Arch,
    HParams,
    arch_metadata,
    gguf_tensor_name,
    llama3_rope_factors,
    pick_architecture,
    transform,
)
from .convert_fp8 import DEFAULT_BLOCK, SCALE_SUFFIX, check_pair, dequantize, is_fp8, quantization
from .convert_vocab import TokenizerFiles, Vocab, build_vocab

log = logging.getLogger("kiln.convert")

# --outtype -> (ggml type id of 2-D weights, general.file_type)
OUTTYPES = {"f32": (0, 0), "f16": (1, 1), "bf16": (30, 32), "q8_0": (8, 7)}
F32, F16, BF16, Q8_0 = 0, 1, 30, 8
GGML_QUANT_VERSION = 2

_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass
class _Source:
    """One tensor of the checkpoint: where it is and what it looks like, data not read."""

    name: str
    path: Path
    shape: tuple[int, ...]
    dtype: str


class Checkpoint:
    """The safetensors files of a checkpoint directory, listed without reading tensor data."""

    def __init__(self, hf_dir: Path, fp8_block: tuple[int, int] | None = None):
        from safetensors import safe_open

        self.dir = hf_dir
        self.fp8_block = fp8_block or DEFAULT_BLOCK
        self.scales: dict[str, _Source] = {}  # fp8 weight name -> its _scale_inv
        files = sorted(
            p for p in hf_dir.iterdir() if p.name.startswith("model") and p.name.endswith(".safetensors")
        )
        index_path = hf_dir / "model.safetensors.index.json"
        weight_map: dict[str, str] | None = None
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConvertError(
                    f"{index_path}: no valid 'weight_map'; download the index file again"
                ) from None
            missing = sorted({f for f in weight_map.values() if not (hf_dir / f).is_file()})
            if missing:
                raise ConvertError(
                    f"{hf_dir}: shard {missing[0]} listed in {index_path.name} is missing "
                    f"({len(missing)} missing); download all the weight files"
                )
            if not files:
                files = sorted({hf_dir / f for f in weight_map.values()})
        if not files:
            other = [p.name for p in hf_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf")]
            hint = (
                f" (found {', '.join(sorted(other))}: save the model with safe_serialization=True)"
                if other
                else ""
            )
            raise ConvertError(
                f"{hf_dir}: no model*.safetensors weight files{hint}; kiln convert reads safetensors"
            )
        self.tensors: dict[str, _Source] = {}
        for path in files:
            try:
                with safe_open(path, framework="pt", device="cpu") as f:
                    for key in f.keys():
                        sl = f.get_slice(key)
                        if key in self.tensors:
                            raise ConvertError(
                                f"tensor {key} is in both {self.tensors[key].path.name} and {path.name}"
                            )
                        self.tensors[key] = _Source(key, path, tuple(sl.get_shape()), sl.get_dtype())
            except ConvertError:
                raise
            except Exception as e:  # safetensors raises its own error types
                raise ConvertError(
                    f"{path}: cannot be read as safetensors ({e}); download it again"
                ) from None
        if weight_map is not None and len(files) > 1 and set(weight_map) != set(self.tensors):
            diff = sorted(set(weight_map) ^ set(self.tensors))
            raise ConvertError(
                f"{index_path}: lists other tensors than the shards hold (e.g. {diff[0]}); download the files again"
            )
        # a single file lists its tensors sorted by name: take that order whatever the sharding
        self.tensors = dict(sorted(self.tensors.items()))
        self._pair_fp8_scales()

    def _pair_fp8_scales(self) -> None:
        """Move each `W_scale_inv` out of the tensor list, next to its fp8 weight `W`."""
        for name in [n for n in self.tensors if n.endswith(SCALE_SUFFIX)]:
            weight = self.tensors.get(name[: -len(SCALE_SUFFIX)])
            if weight is None:
                raise ConvertError(
                    f"tensor {name} scales {name[: -len(SCALE_SUFFIX)]}, which the checkpoint does not have"
                )
            if not is_fp8(weight.dtype):
                raise ConvertError(f"tensor {name} scales {weight.name}, which is {weight.dtype}, not fp8")
            check_pair(weight.name, weight.shape, self.tensors[name].shape, self.fp8_block)
            self.scales[weight.name] = self.tensors.pop(name)
        for src in self.tensors.values():
            if is_fp8(src.dtype) and src.name not in self.scales:
                raise ConvertError(
                    f"tensor {src.name} is {src.dtype} without a {src.name}{SCALE_SUFFIX}; kiln convert reads "
                    "block-scaled fp8 checkpoints only"
                )

    def check_dtype(self, src: _Source) -> None:
        if src.dtype not in _FLOAT_DTYPES and src.name not in self.scales:
            raise ConvertError(
                f"tensor {src.name} has dtype {src.dtype}; kiln convert reads f32/f16/bf16 checkpoints and "
                "block-scaled fp8 ones, not other quantized ones"
            )

    def load(self, src: _Source) -> torch.Tensor:
        """The tensor as stored; an fp8 weight dequantized to bf16."""
        from safetensors import safe_open

        with safe_open(src.path, framework="pt", device="cpu") as f:
            t = f.get_tensor(src.name)
        scale = self.scales.get(src.name)
        if scale is not None:
            with safe_open(scale.path, framework="pt", device="cpu") as f:
                t = dequantize(t, f.get_tensor(scale.name), self.fp8_block)
        return t


def convert(
    hf_dir, out_path, outtype: str = "f16", mla_convention: str = "ik", split_max_size: int | None = None
) -> Path:
    """Convert the Hugging Face checkpoint in `hf_dir` to a GGUF file at `out_path`; returns its path
    (for a split set, the path of its first shard).

    `outtype`: f32, f16, bf16 or q8_0, the type of the 2-D weights (1-D tensors stay F32).
    `mla_convention` (deepseek2 only): ik (attn_kv_b, attn_k_b and attn_v_b, as ik_llama.cpp's
    converter writes), mainline-old (attn_kv_b only) or mainline-new (3-D attn_k_b/attn_v_b
    and the MQA form of the attention keys, as llama.cpp's current converter writes).
    When `out_path` is an existing directory, the file is named after the model inside it.
    `split_max_size` (bytes): shards of at most that much tensor data, named
    OUT-00001-of-0000N.gguf (OUT without .gguf); a model that fits in one is one plain file.
    """
    hf_dir = Path(hf_dir)
    if outtype not in OUTTYPES:
        raise ConvertError(f"--outtype {outtype!r} is not supported; use one of {', '.join(OUTTYPES)}")
    if mla_convention not in convert_moe.MLA_CONVENTIONS:
        raise ConvertError(
            f"--mla-convention {mla_convention!r} is not supported; use one of "
            f"{', '.join(convert_moe.MLA_CONVENTIONS)}"
        )
    if not hf_dir.is_dir():
        raise ConvertError(f"{hf_dir}: no such directory; give the directory of a Hugging Face checkpoint")
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise ConvertError(f"{hf_dir}: no config.json; give the directory of a Hugging Face checkpoint")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConvertError(f"{config_path}: is not valid JSON ({e}); download it again") from None
    if not isinstance(config, dict):
        raise ConvertError(f"{config_path}: is not a JSON object; download it again")
    hp = HParams(config, str(config_path))
    arch = pick_architecture(hp)
    fp8_block = quantization(hp.cfg, str(config_path))
    type_id, file_type = OUTTYPES[outtype]
    checkpoint = Checkpoint(hf_dir, fp8_block)
    files = TokenizerFiles(hf_dir, hp.cfg)
    vocab = build_vocab(files, hp.get("vocab_size"))
    if arch.moe:
        layout = convert_moe.layout(arch, hp, checkpoint.tensors)
        tensors = _plan_moe_tensors(arch, hp, checkpoint, type_id, layout, mla_convention)
        arch_meta = convert_moe.moe_metadata(arch, hp, file_type, layout, mla_convention)
        if arch.name == "glm4moe":
            convert_moe.glm_special_tokens(vocab.tokens, vocab.special_ids)
    else:
        tensors = _plan_tensors(arch, hp, checkpoint, type_id, _embedding_rows(arch, vocab))
        arch_meta = arch_metadata(arch, hp, file_type, files.tokenizer_config or {})

    out = Path(out_path)
    if out.is_dir():
        out = out / f"{hf_dir.resolve().name}-{outtype.upper()}.gguf"
    w = _Metadata()
    w.add("general.architecture", arch.name, ValueType.STRING)
    w.add("general.type", "model", ValueType.STRING)
    _general_metadata(w, hp, hf_dir, _size_label(tensors))
    for key, value, vtype in arch_meta:
        w.add(key, value, vtype)
    vocab.write(w)
    if arch.name == "gemma3" and vocab.model == "llama":
        w.add("tokenizer.ggml.add_space_prefix", False, ValueType.BOOL)
    w.add("general.quantization_version", GGML_QUANT_VERSION, ValueType.UINT32)
    out = _write(out, w, tensors, split_max_size)
    log.info("wrote %s: %d tensors, %s", out, len(tensors), outtype)
    return out


class _Metadata:
    """The metadata keys in order, with their types: GGUFWriter.add's signature, kept for the writer."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.types: dict = {}

    def add(self, key: str, value, vtype: ValueType | None = None, item_type=None) -> None:
        self.values[key] = value
        self.types[key] = (vtype, item_type)


def _write(out: Path, meta: _Metadata, tensors, split_max_size: int | None) -> Path:
    """One GGUF file, or a split set when `split_max_size` asks for more than one shard."""
    items = [SplitTensor(*t) for t in tensors]
    if split_max_size is not None:
        limits = SplitLimits(max_bytes=split_max_size)
        prefix = split_prefix(out)
        if len(plan_split(prefix, meta.values, meta.types, items, limits)) > 1:
            shards = write_split(prefix, meta.values, meta.types, items, limits, force=True)
            return shards[0].path
    w = GGUFWriter(out)
    for key, value in meta.values.items():
        w.add(key, value, *meta.types[key])
    for t in items:
        w.add_tensor(t.name, t.shape, t.type_id, t.source)
    w.write()
    return out


def _embedding_rows(arch: Arch, vocab: Vocab) -> int | None:
    """Gemma 3's embedding is cut to the vocabulary (its checkpoints pad it with unused rows)."""
    return len(vocab.tokens) if arch.name == "gemma3" else None


def _plan_tensors(arch: Arch, hp: HParams, ckpt: Checkpoint, type_id: int, vocab_rows: int | None):
    """(gguf name, ggml shape, type id, source callable) for every tensor, in llama.cpp's order."""
    n_layer = int(hp.require("num_hidden_layers"))
    tied = bool(hp.get("tie_word_embeddings", False))
    planned = []
    if arch.name == "llama" and (factors := llama3_rope_factors(hp)) is not None:
        planned.append(("rope_freqs.weight", (factors.numel(),), F32, _constant(factors)))
    seen: dict[str, str] = {}
    for src in ckpt.tensors.values():
        gguf_name = gguf_tensor_name(arch, src.name, n_layer)
        if gguf_name is None or (gguf_name == "output.weight" and tied):
            continue
        if gguf_name in seen:
            raise ConvertError(
                f"tensors {seen[gguf_name]} and {src.name} both map to {gguf_name}; check the checkpoint"
            )
        seen[gguf_name] = src.name
        ckpt.check_dtype(src)
        shape = list(src.shape)
        if vocab_rows is not None and "embed_tokens.weight" in src.name and shape and shape[0] > vocab_rows:
            shape[0] = vocab_rows
        shape = [d for d in shape if d != 1]  # llama.cpp squeezes every tensor
        out_type = type_id
        if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not src.name.endswith(".weight"):
            out_type = F32
        out_type = _fit_blocks(gguf_name, shape, out_type)
        planned.append(
            (
                gguf_name,
                tuple(reversed(shape)),
                out_type,
                _loader(ckpt, src, arch, hp, vocab_rows, out_type, shape),
            )
        )
    missing = [n for n in ("token_embd.weight", "output_norm.weight") if n not in seen]
    if missing:
        raise ConvertError(
            f"{ckpt.dir}: the checkpoint has no {missing[0]} tensor; the weights are incomplete"
        )
    return planned


def _plan_moe_tensors(arch: Arch, hp: HParams, ckpt: Checkpoint, type_id: int, layout, mla: str):
    """(gguf name, ggml shape, type id, source callable) of a MoE checkpoint, from convert_moe's plan."""
    for src in ckpt.tensors.values():
        ckpt.check_dtype(src)
    shapes = {name: src.shape for name, src in ckpt.tensors.items()}
    planned = []
    for p in convert_moe.plan_tensors(arch, hp, shapes, layout, mla):
        out_type = _fit_blocks(p.name, p.shape, F32 if p.f32 else type_id)
        planned.append((p.name, tuple(reversed(p.shape)), out_type, _moe_loader(ckpt, p, out_type)))
    return planned


def _fit_blocks(name: str, shape, out_type: int) -> int:
    """Q8_0 needs rows of whole 32-value blocks; other rows are written F16, as llama.cpp's converter does."""
    if out_type == Q8_0 and shape[-1] % 32:
        log.warning("%s: rows of %d values do not fill Q8_0 blocks of 32, falling back to F16", name, shape[-1])
        return F16
    return out_type


def _moe_loader(ckpt: Checkpoint, p: convert_moe.Planned, out_type: int):
    def experts():
        for name in p.sources:  # stacked experts: read, encoded and written one at a time
            yield _encode(_as_float(ckpt.load(ckpt.tensors[name])), out_type, p.name)

    def load():
        if len(p.sources) > 1:
            return experts()
        t = _as_float(ckpt.load(ckpt.tensors[p.sources[0]]))
        if p.build is not None:
            t = p.build([t])
        return _encode(t.reshape(p.shape), out_type, p.name)

    return load


def _as_float(t: torch.Tensor) -> torch.Tensor:
    """f16 and f32 as they are, anything else (bf16, f64) as f32, as llama.cpp's converter does."""
    return t if t.dtype in (torch.float16, torch.float32) else t.to(torch.float32)


def _constant(t: torch.Tensor) -> Callable[[], np.ndarray]:
    return lambda: t.numpy().astype(np.float32)


def _loader(
    ckpt: Checkpoint, src: _Source, arch: Arch, hp: HParams, vocab_rows, out_type: int, shape: list[int]
):
    def load() -> np.ndarray:
        t = _as_float(ckpt.load(src))
        t = transform(arch, hp, src.name, t, vocab_rows).reshape(shape)
        return _encode(t, out_type, src.name)

    return load


def _encode(t: torch.Tensor, type_id: int, name: str = "") -> np.ndarray:
    a = t.contiguous().numpy()
    if type_id == Q8_0:
        return quantize("Q8_0", a, tensor_name=name)
    if type_id == F32:
        return a.astype(np.float32, copy=False)
    if type_id == F16:
        return a.astype(np.float16, copy=False)
    return bf16_bits(a)


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """float -> bfloat16 bits, rounding to nearest even, NaNs kept quiet (as gguf-py rounds)."""
    u = a.astype(np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    u = np.where(nan, (u & 0xFFFF0000) | (64 << 16), u)
    u = (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    return u.astype(np.uint16)


# ----- general.* -----


def _size_label(tensors) -> str | None:
    """gguf-py's size label: 135M for a dense model, 8x1.2M (experts x parameters per token path) for MoE."""
    total = shared = expert = expert_sum = n_expert_tensors = 0
    for name, ggml_shape, *_ in tensors:
        size = math.prod(ggml_shape)
        if "_exps." in name:
            count = ggml_shape[1 if ".bias" in name else 2]
            expert += size // count
            expert_sum += count
            n_expert_tensors += 1
        else:
            shared += size
        total += size
    if n_expert_tensors:
        return f"{expert_sum // n_expert_tensors}x{size_label(shared + expert)}"
    return size_label(total) if total > 0 else None


def _general_metadata(w: GGUFWriter, hp: HParams, hf_dir: Path, label: str | None) -> None:
    """general.name (and organization) from _name_or_path or the directory name, and the size label."""
    model_id = hp.raw.get("_name_or_path")
    if not isinstance(model_id, str) or not model_id or model_id.count("/") > 1 or " " in model_id:
        model_id = hf_dir.resolve().name
    org, _, name = model_id.rpartition("/")
    w.add("general.name", _title(name), ValueType.STRING)
    if org and not org.startswith("."):
        w.add("general.organization", _title(org), ValueType.STRING)
    if label:
        w.add("general.size_label", label, ValueType.STRING)


def _title(s: str) -> str:
    words = s.strip().replace("-", " ").split()
    return " ".join(
        w.title() if w.islower() and not re.match(r"^(v\d+(?:\.\d+)*|\d.*)$", w) else w for w in words
    )


_SIZE_STEPS = ((1e12, 1e-12, "T"), (1e9, 1e-9, "B"), (1e6, 1e-6, "M"), (-1, 1e-3, "K"))


def size_label(n: int) -> str:
    """llama.cpp's parameter count label: 135M, 1.5B, 8.0B, 220K."""
    scale, suffix = next((s, x) for limit, s, x in _SIZE_STEPS if n > limit)
    scaled = n * scale
    digits = max(2 - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{digits}f}{suffix}"
