"""The GGUF file format: reader (mmap, split files), streaming writer, type geometry, key names.

This layer imports nothing else of kiln but `kiln.errors`.
"""

from .constants import ItemType, ValueType
from .reader import GGUFFile, TensorInfo, split_path
from .types import GGML_TYPES, GGML_TYPES_BY_NAME, GGMLType, ggml_type, ggml_type_name
from .writer import GGUFWriter, copy_metadata

__all__ = [
    "GGML_TYPES",
    "GGML_TYPES_BY_NAME",
    "GGMLType",
    "GGUFFile",
    "GGUFWriter",
    "ItemType",
    "TensorInfo",
    "ValueType",
    "copy_metadata",
    "ggml_type",
    "ggml_type_name",
    "split_path",
]
