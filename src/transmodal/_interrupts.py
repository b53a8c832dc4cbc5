"""Interrupts of a run other than Ctrl+C (kept free of heavy imports: the command line's
``--help`` imports this)."""

from __future__ import annotations


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, a pipeline's cancel or a scheduler sends) raised as an
    exception by the command line, so that the temporary files of unfinished outputs are
    removed on the way out, as they are after Ctrl+C. A :class:`KeyboardInterrupt`: a
    training stops as after Ctrl+C (the epochs done kept, a checkpoint of them written),
    then this is raised again; so is Lightning's own answer to SIGTERM in a script."""
