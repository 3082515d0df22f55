"""The file types `llama-quantize` accepts (Q4_K_M, IQ4_KS, IQ2_K_R4, ...) and the type-level
facts its per-tensor mixtures rest on: each file type's id (written as `general.file_type`),
default tensor type and usage line; the fallback type for rows that do not fit a 256-value
super-block; the plain type and row count of each row-interleaved type; the file type a
`--repack` gives. The facts are ik_llama.cpp's (examples/quantize and src/llama-quantize.cpp).

    ft = file_type("q4_k_m")        # FileType('Q4_K_M', 15, 'Q4_K', ...)
    ft = file_type("15")            # ik's numeric form: the first name with that id, 'Q4_K'
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..errors import OptionError, QuantizeError
from ..gguf.types import GGML_TYPES_BY_NAME


class FileTypeError(OptionError):
    """A file type name or id that llama-quantize does not know."""


class UnsupportedRowSizeError(QuantizeError):
    """A tensor's rows fit neither the chosen type nor any fallback type."""


@dataclass(frozen=True)
class FileType:
    name: str  # as llama-quantize spells it
    id: int  # LLAMA_FTYPE_*: general.file_type of the output
    default_type: str  # the tensor type of every tensor no rule singles out

    @property
    def description(self) -> str:
        """One line for usage texts: the default tensor type and its bits per weight."""
        if self.only_copy:
            return "only copy tensors, no quantizing"
        t = GGML_TYPES_BY_NAME[self.default_type]
        mix = ", with per-tensor rules" if self.mixture else ""
        return f"{8.0 * t.type_size / t.block_size:.4g} bpw {self.default_type}{mix}"

    @property
    def only_copy(self) -> bool:
        """COPY: every tensor is written as it is."""
        return self.name == "COPY"

    @property
    def mixture(self) -> bool:
        """Whether per-tensor rules apply: only for quantized default types (not F32/F16/BF16)."""
        return self.default_type not in _FLOAT_TYPES

    def usage_line(self) -> str:
        """The line llama-quantize's usage prints for it."""
        head = "          " if self.only_copy else f"  {self.id:2d}  or  "
        return f"{head}{self.name:<7s} : {self.description}"


_FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "BF16_R16"})

# llama-quantize's QUANT_OPTIONS, in its order: (name, id, default tensor type).
# Aliases (Q3_K, Q4_K, Q5_K) share an id; a numeric argument takes the first name with it.
_TABLE = [
    ("Q4_0", 2, "Q4_0"),
    ("Q4_1", 3, "Q4_1"),
    ("Q5_0", 8, "Q5_0"),
    ("Q5_1", 9, "Q5_1"),
    ("Q6_0", 135, "Q6_0"),
    ("MXFP4", 38, "MXFP4"),
    ("MXFP4_R8", 351, "MXFP4_R8"),
    ("IQ2_XXS", 19, "IQ2_XXS"),
    ("IQ2_XXS_R4", 219, "IQ2_XXS_R4"),
    ("IQ2_XS", 20, "IQ2_XS"),
    ("IQ2_XS_R4", 220, "IQ2_XS_R4"),
    ("IQ2_S", 28, "IQ2_XS"),
    ("IQ2_M", 29, "IQ2_S"),
    ("IQ2_M_R4", 229, "IQ2_S_R4"),
    ("IQ1_S", 24, "IQ1_S"),
    ("IQ1_S_R4", 224, "IQ1_S_R4"),
    ("IQ1_M_R4", 231, "IQ1_M_R4"),
    ("IQ1_M", 31, "IQ1_M"),
    ("IQ1_BN", 136, "IQ1_BN"),
    ("IQ2_BN", 137, "IQ2_BN"),
    ("IQ2_BN_R4", 337, "IQ2_BN_R4"),
    ("Q2_K", 10, "Q2_K"),
    ("Q2_K_R4", 210, "Q2_K_R4"),
    ("Q2_K_S", 21, "Q2_K"),
    ("IQ3_XXS", 23, "IQ3_XXS"),
    ("IQ3_KT", 152, "IQ3_KT"),
    ("IQ4_KT", 153, "IQ4_KT"),
    ("IQ3_XXS_R4", 223, "IQ3_XXS_R4"),
    ("IQ3_S", 26, "IQ3_S"),
    ("IQ3_S_R4", 226, "IQ3_S_R4"),
    ("IQ3_M", 27, "IQ3_S"),
    ("Q3_K", 12, "Q3_K"),
    ("Q3_K_R4", 211, "Q3_K_R4"),
    ("IQ3_XS", 22, "IQ3_S"),
    ("Q3_K_S", 11, "Q3_K"),
    ("Q3_K_M", 12, "Q3_K"),
    ("Q3_K_L", 13, "Q3_K"),
    ("IQ4_NL", 25, "IQ4_NL"),
    ("IQ4_NL_R4", 225, "IQ4_NL_R4"),
    ("IQ4_XS_R8", 230, "IQ4_XS_R8"),
    ("Q4_0_R8", 202, "Q4_0_R8"),
    ("Q5_0_R4", 208, "Q5_0_R4"),
    ("Q6_0_R4", 335, "Q6_0_R4"),
    ("Q8_0_R8", 207, "Q8_0_R8"),
    ("Q8_KV", 149, "Q8_KV"),
    ("IQ4_XS", 30, "IQ4_XS"),
    ("IQ4_KS", 145, "IQ4_KS"),
    ("IQ4_KS_R4", 345, "IQ4_KS_R4"),
    ("IQ5_KS_R4", 350, "IQ5_KS_R4"),
    ("IQ4_KSS", 148, "IQ4_KSS"),
    ("IQ5_KS", 150, "IQ5_KS"),
    ("IQ2_K", 138, "IQ2_K"),
    ("IQ2_K_R4", 338, "IQ2_K_R4"),
    ("IQ2_KS", 147, "IQ2_KS"),
    ("IQ1_KT", 156, "IQ1_KT"),
    ("IQ2_KT", 151, "IQ2_KT"),
    ("IQ2_KL", 155, "IQ2_KL"),
    ("IQ3_KS", 154, "IQ3_KS"),
    ("IQ3_K", 139, "IQ3_K"),
    ("IQ3_K_R4", 339, "IQ3_K_R4"),
    ("IQ3_KL", 146, "IQ3_K"),
    ("IQ4_K", 140, "IQ4_K"),
    ("IQ4_K_R4", 340, "IQ4_K_R4"),
    ("IQ5_K", 141, "IQ5_K"),
    ("IQ5_K_R4", 341, "IQ5_K_R4"),
    ("IQ6_K", 142, "IQ6_K"),
    ("Q4_K", 15, "Q4_K"),
    ("Q4_K_R4", 214, "Q4_K_R4"),
    ("Q4_K_S", 14, "Q4_K"),
    ("Q4_K_M", 15, "Q4_K"),
    ("Q5_K", 17, "Q5_K"),
    ("Q5_K_R4", 216, "Q5_K_R4"),
    ("Q5_K_S", 16, "Q5_K"),
    ("Q5_K_M", 17, "Q5_K"),
    ("Q6_K", 18, "Q6_K"),
    ("Q6_K_R4", 218, "Q6_K_R4"),
    ("Q8_K_R8", 399, "Q8_K_R8"),
    ("Q8_KV_R8", 398, "Q8_KV_R8"),
    ("Q8_0", 7, "Q8_0"),
    ("Q4_0_4_4", 33, "Q4_0_4_4"),
    ("Q4_0_4_8", 34, "Q4_0_4_8"),
    ("Q4_0_8_8", 35, "Q4_0_8_8"),
    ("F16", 1, "F16"),
    ("BF16", 32, "BF16"),
    ("BF16_R16", 232, "BF16_R16"),
    ("F32", 0, "F32"),
    ("COPY", 0, "F32"),
]

FILE_TYPES: dict[str, FileType] = {name: FileType(name, i, t) for name, i, t in _TABLE}


def file_type(spec: str | int) -> FileType:
    """The file type named by `spec` as llama-quantize reads it: a name in any case, or a number
    (the first name in the table with that id: 15 is Q4_K, 0 is F32). Unknown: FileTypeError."""
    text = str(spec).strip()
    found = FILE_TYPES.get(text.upper())
    if found is not None:
        return found
    number = re.match(r"[+-]?\d+", text)  # ik parses a leading integer, as std::stoi does
    if number:
        for ft in FILE_TYPES.values():
            if ft.id == int(number.group()):
                return ft
        raise FileTypeError(f"no file type has the id {number.group()}; "
                            "`kiln quantize --help` lists the names and ids")
    key = text.upper()
    close = difflib.get_close_matches(key, list(FILE_TYPES), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `kiln quantize --help` lists them"
    if key in GGML_TYPES_BY_NAME:
        raise FileTypeError(
            f"{text!r} is a tensor type but not a file type (llama-quantize accepts file types only){hint} "
            "To put every tensor in one type, give a file type with that default type and --pure, "
            "or use --custom-q '.*=TYPE'."
        )
    raise FileTypeError(f"unknown file type {text!r}{hint}")


# ---- what each type needs of a row ----

QK_K = 256
QK_BITNET = 64

# types whose rows must hold whole 256-value super-blocks, and where ik falls back to when not
_FALLBACK_256 = {
    **dict.fromkeys(
        ("IQ2_XXS", "IQ2_XXS_R4", "IQ2_XS", "IQ2_XS_R4", "IQ2_KS", "IQ2_S", "IQ2_S_R4", "IQ3_XXS",
         "IQ3_XXS_R4", "IQ3_S", "IQ3_S_R4", "IQ1_S", "IQ1_M", "Q2_K", "Q2_K_R4", "Q3_K", "Q3_K_R4",
         "IQ2_K", "IQ2_K_R4", "IQ2_KL", "IQ3_KS", "IQ3_K", "IQ3_K_R4", "IQ4_KSS", "IQ4_KS",
         "IQ4_KS_R4", "IQ4_XS_R8", "IQ1_KT", "IQ2_KT", "IQ3_KT", "IQ4_KT", "IQ4_XS"),
        "IQ4_NL"),
    **dict.fromkeys(("IQ4_K", "IQ4_K_R4", "Q4_K_R4", "IQ5_KS", "IQ5_KS_R4", "Q4_K"), "Q5_0"),
    **dict.fromkeys(("IQ5_K", "IQ5_K_R4", "Q5_K_R4", "Q5_K"), "Q6_0"),
    **dict.fromkeys(("IQ6_K", "Q6_K_R4", "Q8_K_R8", "Q6_K"), "Q8_0"),
}
# the Bitnet types need rows of whole 64-value blocks and have no fallback
_NEEDS_64 = frozenset({"IQ1_BN", "IQ2_BN", "IQ2_BN_R4"})


def fallback_type(type_name: str, shape) -> str:
    """`type_name`, or the type ik_llama.cpp falls back to when a row of `shape[0]` values does not
    hold whole super-blocks of it (IQ4_NL for 2-4 bit, Q5_0 / Q6_0 / Q8_0 for 4 / 5 / 6 bit)."""
    nx = int(shape[0])
    if type_name in _FALLBACK_256 and nx % QK_K:
        return _FALLBACK_256[type_name]
    if type_name in _NEEDS_64 and nx % QK_BITNET:
        raise UnsupportedRowSizeError(
            f"rows of {nx} values cannot be {type_name} (it needs multiples of {QK_BITNET}) and it has no "
            "fallback type; ik_llama.cpp stops with 'Unsupported tensor size encountered'. "
            "Give this tensor another type with --custom-q"
        )
    return type_name


# row-interleaved type -> (its plain type, rows per group), as ik quantizes them: a tensor
# whose row count is not a multiple of the group is written in the plain type instead
INTERLEAVED: dict[str, tuple[str, int]] = {
    "Q4_0_4_4": ("Q4_0", 4), "Q4_0_4_8": ("Q4_0", 4), "Q4_0_8_8": ("Q4_0", 8),
    "Q4_0_R8": ("Q4_0", 8), "Q5_0_R4": ("Q5_0", 4), "Q6_0_R4": ("Q6_0", 4), "Q8_0_R8": ("Q8_0", 8),
    "Q2_K_R4": ("Q2_K", 4), "Q3_K_R4": ("Q3_K", 4), "Q4_K_R4": ("Q4_K", 4), "Q5_K_R4": ("Q5_K", 4),
    "Q6_K_R4": ("Q6_K", 4), "IQ2_XXS_R4": ("IQ2_XXS", 4), "IQ2_XS_R4": ("IQ2_XS", 4),
    "IQ2_S_R4": ("IQ2_S", 4), "IQ3_XXS_R4": ("IQ3_XXS", 4), "IQ3_S_R4": ("IQ3_S", 4),
    "IQ4_XS_R8": ("IQ4_XS", 8), "IQ4_NL_R4": ("IQ4_NL", 4), "IQ1_S_R4": ("IQ1_S", 4),
    "IQ1_M_R4": ("IQ1_M", 4), "IQ2_BN_R4": ("IQ2_BN", 4), "IQ2_K_R4": ("IQ2_K", 4),
    "IQ3_K_R4": ("IQ3_K", 4), "IQ4_K_R4": ("IQ4_K", 4), "IQ4_KS_R4": ("IQ4_KS", 4),
    "IQ5_KS_R4": ("IQ5_KS", 4), "IQ5_K_R4": ("IQ5_K", 4), "MXFP4_R8": ("MXFP4", 8),
    "Q8_KV_R8": ("Q8_KV", 8), "Q8_K_R8": ("Q8_0", 8), "BF16_R16": ("BF16", 16),
}


def plain_type(type_name: str) -> str:
    """The plain type of a row-interleaved type (itself for any other type)."""
    return INTERLEAVED.get(type_name, (type_name, 1))[0]


def interleave_fit(type_name: str, shape) -> str:
    """`type_name`, or its plain type when the tensor's rows do not fill whole interleaved groups."""
    plain, rows = INTERLEAVED.get(type_name, (type_name, 1))
    n_rows = int(shape[1]) if len(shape) > 1 else 1
    return plain if n_rows % rows else type_name


# `--repack` without a file type: general.file_type of the repacked file
_REPACKED_FILE_TYPE = {
    "Q4_0": "Q4_0_R8", "Q8_0": "Q8_0_R8", "Q5_0": "Q5_0_R4", "Q2_K": "Q2_K_R4", "Q3_K_S": "Q3_K_R4",
    "Q3_K_M": "Q3_K_R4", "Q3_K_L": "Q3_K_R4", "Q4_K_S": "Q4_K_R4", "Q4_K_M": "Q4_K_R4",
    "Q5_K_S": "Q5_K_R4", "Q5_K_M": "Q5_K_R4", "Q6_K": "Q6_K_R4", "IQ2_XXS": "IQ2_XXS_R4",
    "IQ2_XS": "IQ2_XS_R4", "IQ3_XXS": "IQ3_XXS_R4", "IQ1_S": "IQ1_S_R4", "IQ4_NL": "IQ4_NL_R4",
    "IQ3_S": "IQ3_S_R4", "IQ2_M": "IQ2_M_R4", "IQ4_XS": "IQ4_XS_R8", "IQ1_M": "IQ1_M_R4",
    "Q6_0": "Q6_0_R4", "BF16": "BF16_R16", "IQ2_BN": "IQ2_BN_R4", "IQ2_K": "IQ2_K_R4",
    "IQ3_K": "IQ3_K_R4", "IQ4_K": "IQ4_K_R4", "IQ5_K": "IQ5_K_R4", "IQ4_KS": "IQ4_KS_R4",
    "IQ5_KS": "IQ5_KS_R4", "Q8_KV": "Q8_KV_R8",
}
REPACKED_FILE_TYPE: dict[int, int] = {
    FILE_TYPES[a].id: FILE_TYPES[b].id for a, b in _REPACKED_FILE_TYPE.items()
}


def repacked_file_type(file_type_id: int | None) -> int | None:
    """The general.file_type ik writes after `--repack` of a file of type `file_type_id`
    (unchanged where no repacked file type exists)."""
    if file_type_id is None:
        return None
    return REPACKED_FILE_TYPE.get(int(file_type_id), int(file_type_id))
