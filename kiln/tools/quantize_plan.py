"""`kiln quantize`'s plan: for every tensor of the input, what happens to it (copied,
quantized, repacked), its new type, its imatrix entry and its bytes, decided before any
tensor data is read. `--dry-run` prints this plan; the real run executes it, so the size
a dry run predicts is the size written.

The per-tensor default type of a file type comes from `quantize_rules` (ik_llama.cpp's
mixtures); on top of it, in ik_llama.cpp's order: `--custom-q` rules (first matching
regex wins), the fallback to a type the row length allows, no row-interleaved type for
the token embedding, `--token-embedding-type` / `--output-tensor-type`, and a plain type
where the row count does not fill whole interleaved groups.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

from ..errors import KilnError
from ..gguf.types import GGML_TYPES_BY_NAME
from ..quants import interleaved, quant_type

# quantized without an imatrix, these give garbage: ik_llama.cpp refuses them (but for
# token_embd and output); --ignore-imatrix-rules overrides
NEEDS_IMATRIX = frozenset({
    "IQ2_XXS", "IQ2_XXS_R4", "IQ2_XS", "IQ2_XS_R4", "IQ2_S", "IQ2_S_R4", "IQ1_S", "IQ1_S_R4",
    "IQ1_M", "IQ1_M_R4", "IQ1_KT", "IQ2_KT",
})
IMATRIX_EXEMPT = ("token_embd.weight", "output.weight")

# ik_llama.cpp's repack targets (iqk_repacked_type): every row-interleaved layout kiln has, by its
# plain type, but IQ1_S_R4/IQ1_M_R4, whose scales differ from their plain types' (not repacks in ik)
REPACK_TARGETS = {
    interleaved.plain_type(name): name for name in interleaved.LAYOUTS if name not in ("IQ1_S_R4", "IQ1_M_R4")
}
NOT_REPACKED = ("token_embd.weight", "per_layer_token_embd.weight")
FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})


class QuantizePlanError(KilnError):
    """The options or the input cannot give a quantized file."""


def parse_type(name: str, what: str) -> str:
    """A tensor type name, case-insensitive (`q5_k` is Q5_K); unknown names get a did-you-mean."""
    key = name.strip().upper()
    if key in GGML_TYPES_BY_NAME:
        return key
    close = difflib.get_close_matches(key, list(GGML_TYPES_BY_NAME), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `kiln quantize --help` lists the types"
    raise QuantizePlanError(f"unknown tensor type {name!r} in {what}{hint}")


@dataclass
class CustomRule:
    pattern: str
    regex: re.Pattern
    type_name: str
    hits: int = 0


def parse_custom_rules(specs: list[str], source: str = "--custom-q") -> list[CustomRule]:
    """`regex=type[,regex=type...]` items (the recipe syntax), in order."""
    out = []
    for spec in specs:
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            if "=" not in item:
                raise QuantizePlanError(f"{source}: {item!r} is not of the form regex=type")
            pattern, type_name = item.rsplit("=", 1)
            try:
                regex = re.compile(pattern)
            except re.error as e:
                raise QuantizePlanError(f"{source}: bad regex {pattern!r}: {e}") from None
            out.append(CustomRule(pattern, regex, parse_type(type_name, f"{source} rule {item!r}")))
    return out


def read_recipe(path: str) -> list[str]:
    """A recipe file: one `regex=type` rule per line, `#` comments, blank lines ignored."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise QuantizePlanError(f"{path}: cannot read the recipe (--custom-q-file): {e.strerror}") from None
    lines = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # ggml order
    src_type: str
    dst_type: str
    action: str  # "copy", "quantize" or "repack"
    bytes_in: int
    bytes_out: int
    imatrix_key: str | None = None
    notes: list[str] = field(default_factory=list)
    shard: int = 0

    @property
    def placement(self) -> str:
        """Which part of a hybrid rig holds it: routed experts vs the rest."""
        return "routed experts" if "_exps." in self.name else "attention, dense, shared"

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class QuantizeSettings:
    file_type: str | None  # None: --repack only
    pure: bool = False
    custom_rules: list[CustomRule] = field(default_factory=list)
    token_embedding_type: str | None = None
    output_tensor_type: str | None = None
    leave_output_tensor: bool = False
    allow_requantize: bool = False
    ignore_imatrix_rules: bool = False
    repack: bool = False
    repack_patterns: list[re.Pattern] = field(default_factory=list)
    tensor_type_overrides: dict[str, str] = field(default_factory=dict)  # --attn-q-type etc: suffix -> type


@dataclass
class Plan:
    tensors: list[TensorPlan]
    file_type: str | None
    file_type_id: int | None
    unused_rules: list[str]
    n_fallback: int = 0

    @property
    def bytes_in(self) -> int:
        return sum(t.bytes_in for t in self.tensors)

    @property
    def bytes_out(self) -> int:
        return sum(t.bytes_out for t in self.tensors)

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def bytes_by_placement(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.placement] = out.get(t.placement, 0) + t.bytes_out
        return out


def tensor_bytes(type_name: str, shape: tuple[int, ...]) -> int:
    return GGML_TYPES_BY_NAME[type_name].tensor_bytes(shape)


def imatrix_key(name: str, entries) -> str | None:
    """The imatrix entry a tensor uses, with ik_llama.cpp's stand-ins: merged or split up/gate
    experts, ffn_gate using ffn_up's data (same input), attn_v_b <-> attn_kv_b (MLA)."""
    if name in entries:
        return name
    candidates = []
    for part in ("ffn_up_exps.weight", "ffn_gate_exps.weight"):
        if part in name:
            stem = name[: name.index(part)]
            candidates += [stem + "ffn_gate_up_exps.weight", stem + "ffn_up_exps.weight"]
    if "ffn_gate_up_exps.weight" in name:
        candidates.append(name.replace("ffn_gate_up_exps.weight", "ffn_up_exps.weight"))
    elif "ffn_gate.weight" in name:
        candidates.append(name.replace("ffn_gate.weight", "ffn_up.weight"))
    elif ".attn_v_b.weight" in name:
        candidates.append(name.replace(".attn_v_b.weight", ".attn_kv_b.weight"))
    elif ".attn_kv_b.weight" in name:
        candidates.append(name.replace(".attn_kv_b.weight", ".attn_v_b.weight"))
    for c in candidates:
        if c in entries:
            return c
    return None


def _repack_target(t, patterns: list[re.Pattern]) -> str | None:
    target = REPACK_TARGETS.get(t.type_name)
    if target is None or t.name in NOT_REPACKED:
        return None
    if len(t.shape) > 1 and t.shape[1] % interleaved.rows_per_group(target):
        return None
    if patterns and not any(p.search(t.name) for p in patterns):
        return None
    return target


def _repack_plan(gguf, settings: QuantizeSettings) -> Plan:
    from . import quantize_rules as rules

    tensors = []
    for info in gguf.tensors.values():
        nbytes = tensor_bytes(info.type_name, info.shape)
        target = _repack_target(info, settings.repack_patterns)
        if target is None:
            tensors.append(TensorPlan(info.name, info.shape, info.type_name, info.type_name, "copy", nbytes, nbytes))
        else:
            tensors.append(TensorPlan(info.name, info.shape, info.type_name, target, "repack", nbytes,
                                      tensor_bytes(target, info.shape)))
    if not any(t.action == "repack" for t in tensors):
        raise QuantizePlanError("--repack: no tensor of this file has a row-interleaved variant to repack to "
                                "(or --repack-pattern matched none)")
    ftype = rules.repacked_file_type(gguf.metadata.get("general.file_type"))
    return Plan(tensors, None, ftype, [])


def make_plan(gguf, settings: QuantizeSettings, imatrix_entries: dict | None) -> Plan:
    """Decide every tensor's fate; raises QuantizePlanError for what cannot be done."""
    from . import quantize_rules as rules

    if settings.repack:
        return _repack_plan(gguf, settings)
    ftype = rules.file_type(settings.file_type)
    entries = imatrix_entries or {}
    infos = list(gguf.tensors.values())
    choices = rules.default_types(
        ftype,
        gguf.metadata,
        [(t.name, tuple(t.shape), t.type_name) for t in infos],
        pure=settings.pure,
        leave_output_tensor=settings.leave_output_tensor,
        token_embedding_type=settings.token_embedding_type,
        output_tensor_type=settings.output_tensor_type,
        overrides=settings.tensor_type_overrides,
        has_imatrix=bool(entries),
        custom_rules=settings.custom_rules,
    )
    by_pattern = {f"{r.pattern}={r.type_name}": r for r in settings.custom_rules}
    tensors = []
    n_fallback = 0
    for info, choice in zip(infos, choices, strict=True):
        shape = tuple(info.shape)
        src = info.type_name
        nbytes = tensor_bytes(src, shape)
        notes = list(choice.notes)
        if choice.custom_rule is not None:
            rule = by_pattern.get(choice.custom_rule) or next(
                (r for r in settings.custom_rules if choice.custom_rule in (r.pattern, f"{r.pattern}={r.type_name}")), None)
            if rule is not None:
                rule.hits += 1
        if any("fallback" in n for n in notes):
            n_fallback += 1
        new = choice.type_name
        if choice.action == "copy":
            tensors.append(TensorPlan(info.name, shape, src, src, "copy", nbytes, nbytes, notes=notes))
            continue
        key = imatrix_key(info.name, entries)
        if key is not None:
            size = len(entries[key])
            want = shape[0] * (shape[2] if len(shape) > 2 else 1)
            if size != want:
                if info.name != "token_embd.weight":
                    raise QuantizePlanError(
                        f"the imatrix entry {key} has {size} values where tensor {info.name} {list(shape)} needs "
                        f"{want}: the imatrix was computed for another model"
                    )
                key = None
        needs = new in NEEDS_IMATRIX or (new == "Q2_K" and ftype.name == "Q2_K_S")
        if key is None and needs and info.name not in IMATRIX_EXEMPT and not settings.ignore_imatrix_rules:
            raise QuantizePlanError(
                f"tensor {info.name} would be {new}, a very low-bit type that needs an importance matrix "
                f"(without one the result is garbage){'' if entries else ': give one with --imatrix FILE'}"
                f"{'; the imatrix has no entry for it' if entries else ''} "
                "(or --ignore-imatrix-rules to force it)"
            )
        if src not in FLOAT_TYPES and not settings.allow_requantize:
            raise QuantizePlanError(
                f"tensor {info.name} is already quantized ({src}); requantizing loses quality: start from an "
                "f32/bf16/f16 file, or pass --allow-requantize"
            )
        if not quant_type(new).can_quantize:
            raise QuantizePlanError(f"tensor {info.name}: kiln cannot quantize to {new} yet")
        tensors.append(TensorPlan(info.name, shape, src, new, "quantize", nbytes, tensor_bytes(new, shape),
                                  imatrix_key=key, notes=notes))
    unused = [f"{r.pattern}={r.type_name}" for r in settings.custom_rules if r.hits == 0]
    return Plan(tensors, ftype.name, ftype.id, unused, n_fallback)
