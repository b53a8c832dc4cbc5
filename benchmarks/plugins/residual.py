"""An example network architecture for ``Modality(architecture="residual")``: residual MLP
blocks (pre-norm, as in transformer feed-forward layers) instead of the built-in plain MLP.

Registered on import: ``--import benchmarks/plugins/residual.py`` (``transmodal`` commands
and ``benchmarks/a549_validation.py``), or ``import`` it in Python.
"""

from __future__ import annotations

from torch import nn

import transmodal as tm


class ResidualMLP(nn.Module):
    """``Linear(n_in, width)``, then ``depth`` blocks ``h + Dropout(act(Linear(LayerNorm(h))))``,
    then a final ``LayerNorm`` and activation, and ``Linear(width, n_out)`` if ``n_out``."""

    def __init__(self, n_in: int, width: int, depth: int, dropout: float,
                 n_out: int | None = None) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.LeakyReLU(),
                          nn.Dropout(dropout))
            for _ in range(depth)
        )
        self.norm = nn.Sequential(nn.LayerNorm(width), nn.LeakyReLU())
        self.out = nn.Linear(width, n_out) if n_out is not None else nn.Identity()

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.norm(h))


@tm.register_architecture
class Residual(tm.nn.Architecture):
    """Residual MLP encoder and decoder of ``depth`` blocks of ``width`` units each."""

    name = "residual"

    def encoder(self, n_in, n_out, *, dropout, width=256, depth=2):
        return ResidualMLP(n_in, width, depth, dropout, n_out)

    def decoder(self, n_in, *, dropout, width=256, depth=2):
        return ResidualMLP(n_in, width, depth, dropout), width
