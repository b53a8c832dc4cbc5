"""Scanpy-style tools (``tm.tl``): functions that take the data, train, and write the results
into it (``obsm["X_<key>"]``, ``uns[<key>]["params"]``)."""

from ._integrate import integrate, joint_embedding

__all__ = ["integrate", "joint_embedding"]
