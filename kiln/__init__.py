"""kiln: run GGUF language models (dense and Mixture-of-Experts) from Python.

The public entry points are `kiln.runtime.Engine` and the `kiln` command line.
"""

__version__ = "0.1.0"
