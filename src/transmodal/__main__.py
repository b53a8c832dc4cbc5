"""``python -m transmodal`` runs the command-line interface."""

from .cli import console

console()
