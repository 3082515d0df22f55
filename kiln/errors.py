"""The one exception family of kiln.

Every error caused by user input (a file, a flag, a prompt) is a `KilnError`
whose message names the thing at fault and the fix. The CLI prints these
without a traceback and exits 1. This module sits below all layers of
DESIGN.md: every layer may raise these errors.
"""


class KilnError(Exception):
    """Base of all errors kiln reports to a user."""


class GGUFError(KilnError):
    """A GGUF file is missing, malformed, truncated or inconsistent."""


class UnsupportedTypeError(KilnError):
    """A tensor uses a quant type that kiln cannot compute with (yet)."""


class ModelError(KilnError):
    """The model in a file cannot be run: unknown architecture, missing tensor or key."""


class ContextLimitError(KilnError):
    """A prompt or generation does not fit in the context (`-c`)."""


class TokenizerError(KilnError):
    """The vocabulary in a GGUF file cannot be turned into a tokenizer."""


class ConvertError(KilnError):
    """A Hugging Face checkpoint cannot be converted to GGUF."""


class OptionError(KilnError):
    """A command-line flag or an `Options` field has a bad value."""


class NumericalError(KilnError):
    """A NaN or Inf appeared in the computation."""


class QuantizeError(KilnError):
    """Values cannot be quantized as asked (missing imatrix, wrong imatrix size, bad input)."""
