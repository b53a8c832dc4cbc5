"""End-to-end workflows over the public API: evaluation on paired cells and the A549 demo."""

from ._demo import format_table, run_demo
from ._evaluate import comparison_space, evaluate_paired

__all__ = ["comparison_space", "evaluate_paired", "format_table", "run_demo"]
