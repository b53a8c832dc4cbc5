"""The package's version: the one place it is written (``pyproject.toml`` reads it, and so
do ``transmodal.__version__``, ``transmodal --version`` and the version saved with each
model), so that it is the version of the code that runs, installed or not."""

__version__ = "0.1.0"
