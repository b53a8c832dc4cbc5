"""The ``transmodal`` command line: ``train``, ``embed``, ``translate``, ``evaluate``, ``demo``.

Run ``transmodal --help`` (or ``python -m transmodal --help``) for the commands and
``transmodal COMMAND --help`` for their options and examples.
"""

from ._main import build_parser, console, main

__all__ = ["build_parser", "console", "main"]
