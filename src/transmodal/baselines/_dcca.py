"""Deep canonical correlation analysis (Andrew et al., ICML 2013) for paired cells.

Also holds the small torch helpers shared with :mod:`._gan` (MLPs,
seeded random state, minibatch schedules).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import resolve_device, seeded, torch_defaults
from ._base import as_dense_matrix, check_float, check_int, check_row_pairs
from ._cca import _l2_rows, _linear_cca, _parse_pairs, _PreprocessedBaseline, check_varies

_EPS_DIV = 1e-9


# ------------------------------------------------------------------ torch helpers
def _check_hidden(hidden: Any, name: str = "hidden") -> tuple[int, ...]:
    try:
        out = tuple(hidden)
    except TypeError as err:
        raise ValueError(
            f"{name} must be a sequence of positive integers; got {hidden!r}"
        ) from err
    for h in out:
        check_int(h, name, minimum=1)
    return tuple(int(h) for h in out)


def _mlp(
    n_in: int, hidden: Sequence[int], n_out: int, act: type[nn.Module]
) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = n_in
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Train seeded with torch's defaults; the caller's random state and settings are left
    as they were."""
    with torch_defaults(), seeded(seed, device):
        yield


def _batches(order: np.ndarray, batch_size: int, min_last: int) -> list[np.ndarray]:
    """Split ``order`` into minibatches; a last batch smaller than ``min_last`` is merged
    into the previous one."""
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < min_last:
        last = chunks.pop()  # (popped first: `chunks[-2] = ...pop()` indexed the shorter list)
        chunks[-1] = np.concatenate([chunks[-1], last])
    return chunks


@torch.no_grad()
def _apply(
    net: nn.Module, a: np.ndarray, device: torch.device, chunk: int = 8192
) -> np.ndarray:
    net.eval()
    out = [
        net(torch.as_tensor(a[i : i + chunk], dtype=torch.float32, device=device))
        .cpu()
        .numpy()
        for i in range(0, a.shape[0], chunk)
    ]
    return np.concatenate(out).astype(np.float64)


# ----------------------------------------------------------------------- DCCA loss
def _inv_sqrt_t(c: torch.Tensor, eps: float) -> torch.Tensor:
    w, v = torch.linalg.eigh(c)
    w = torch.clamp(w, min=eps)
    return (v * w.rsqrt()) @ v.T


def dcca_loss(
    h1: torch.Tensor,
    h2: torch.Tensor,
    r1: float = 1e-3,
    r2: float = 1e-3,
    eps: float = 1e-9,
) -> torch.Tensor:
    """Negative total canonical correlation of two ``(m, o)`` minibatch outputs.

    The standard DCCA objective: with covariances ``S11 + r1 I``, ``S22 + r2 I`` and
    ``S12``, ``T = S11^-1/2 S12 S22^-1/2`` (inverse roots by eigen-decomposition, with
    eigenvalues clamped at ``eps``), the loss is ``-trace((T'T)^1/2)`` = minus the sum of
    all ``o`` canonical correlations.  Computed in float64.
    """
    h1 = h1.double()
    h2 = h2.double()
    m, o = h1.shape
    h1c = h1 - h1.mean(dim=0, keepdim=True)
    h2c = h2 - h2.mean(dim=0, keepdim=True)
    eye = torch.eye(o, dtype=h1.dtype, device=h1.device)
    s12 = h1c.T @ h2c / (m - 1)
    s11 = h1c.T @ h1c / (m - 1) + r1 * eye
    s22 = h2c.T @ h2c / (m - 1) + r2 * eye
    t = _inv_sqrt_t(s11, eps) @ s12 @ _inv_sqrt_t(s22, eps)
    return -torch.linalg.svdvals(t).sum()


# ---------------------------------------------------------------------------- DCCA
def _check_batch_size(batch_size: int, n_components: int) -> None:
    """Raise a ValueError unless a minibatch can hold more cells than DCCA outputs."""
    if batch_size <= n_components:
        raise ValueError(
            f"batch_size must be larger than n_components={n_components} (a DCCA "
            "minibatch needs more cells than network outputs to estimate their "
            f"covariances); got batch_size={batch_size}"
        )


class DCCA(_PreprocessedBaseline):
    """Deep CCA (Andrew et al. 2013): two MLPs whose outputs are maximally correlated.

    Each modality is preprocessed separately (``log1p``, standardisation, PCA to
    ``n_pca`` components, one global rescaling to mean variance 1; fitted on all cells
    given to :meth:`fit`).  Two MLPs ``f`` (for ``x``) and ``g`` (for ``y``) with hidden
    layers ``hidden`` and ``n_components`` outputs are trained with Adam on paired
    minibatches to minimise :func:`dcca_loss` (minus the total canonical correlation of
    their outputs).  Then, as in the paper, a linear CCA (ridge ``r1``) is fitted on the
    training pairs' outputs; the common embedding of a cell is its network output
    projected onto the canonical directions (optionally L2-normalised per cell).

    DCCA learns no decoder: it cannot translate between modalities
    (:meth:`translate_x_to_y` / :meth:`translate_y_to_x` raise ``NotImplementedError``).

    Parameters
    ----------
    n_components
        Output dimension of both networks (and of the embedding).
    hidden
        Hidden layer widths of both MLPs (ReLU).
    r1, r2
        Ridge on the output covariances of ``x`` and ``y``.
    eps
        Eigenvalue floor of the inverse square roots.
    max_epochs, batch_size, lr
        Adam training schedule (one epoch = one pass over the training pairs; a last
        batch smaller than ``max(batch_size // 2, 2 * n_components)`` is merged into the
        previous one).  ``batch_size`` must exceed ``n_components``: the loss needs more
        cells than outputs to estimate the output covariances.
    weight_decay
        Adam weight decay.
    l2_normalize
        L2-normalise each cell's embedding.
    log1p, scale, n_pca
        Preprocessing, see :class:`CCA`.
    seed
        Seeds the network initialisation, the minibatch order and the PCA (no global
        random state is changed).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (CUDA, else MPS, when
        available).
    verbose
        Print the loss after every 10th epoch.

    Attributes
    ----------
    history_
        ``{"loss": [...]}``, the mean minibatch loss of every epoch, weighted by batch
        size over the minibatches trained on (minus the total correlation of
        ``n_components`` outputs: lower is better, minimum ``-n_components``).
    correlations_
        Canonical correlations of the training pairs' network outputs.
    pairs_
        The ``(ix, iy)`` rows trained on.
    net_x_, net_y_
        The trained networks.
    """

    paired = True
    cannot_translate = ("it learns two encoders into a maximally correlated space but no "
                        "decoder back to features")

    def __init__(
        self,
        n_components: int = 10,
        *,
        hidden: Sequence[int] = (256, 128),
        r1: float = 1e-3,
        r2: float = 1e-3,
        eps: float = 1e-9,
        max_epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        l2_normalize: bool = False,
        log1p: bool = True,
        scale: bool = True,
        n_pca: int | None = 100,
        seed: int = 0,
        device: str | torch.device = "cpu",
        verbose: bool = False,
    ) -> None:
        check_int(n_components, "n_components", minimum=1)
        self.hidden = _check_hidden(hidden)
        for name, val in (("r1", r1), ("r2", r2), ("weight_decay", weight_decay)):
            check_float(val, name, positive=False)
        for name, val in (("eps", eps), ("lr", lr)):
            check_float(val, name, positive=True)
        check_int(max_epochs, "max_epochs", minimum=1)
        check_int(batch_size, "batch_size", minimum=2)
        _check_batch_size(batch_size, n_components)
        check_int(n_pca, "n_pca", minimum=1, allow_none=True)
        check_int(seed, "seed", minimum=0)
        self.device = resolve_device(device)
        self.n_components = int(n_components)
        self.r1, self.r2, self.eps = float(r1), float(r2), float(eps)
        self.max_epochs = int(max_epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.l2_normalize = bool(l2_normalize)
        self.log1p = bool(log1p)
        self.scale = bool(scale)
        self.n_pca = n_pca
        self.seed = int(seed)
        self.verbose = bool(verbose)

    def __repr__(self) -> str:
        return (
            f"DCCA(n_components={self.n_components}, hidden={self.hidden}, "
            f"max_epochs={self.max_epochs}, batch_size={self.batch_size}, lr={self.lr})"
        )

    def fit(self, x: Any, y: Any, pairs: Any = None) -> DCCA:
        """Train on paired cells.

        Parameters
        ----------
        x
            Modality 1, ``(n_x, p)``: dense array or scipy sparse matrix.
        y
            Modality 2, ``(n_y, q)``.
        pairs
            ``None`` (or ``"all"``): row ``i`` of ``x`` and ``y`` is the same cell (needs
            ``n_x == n_y``).  Otherwise the known pairs ``(ix, iy)`` (two equal-length
            index arrays, or an index array of shape ``(2, k)`` / ``(k, 2)``): only these
            pairs are trained on (partial supervision, "anchor fractions"); all cells
            are preprocessed and embedded.

        Returns
        -------
        ``self``.

        Raises
        ------
        ValueError
            For invalid inputs, ``batch_size <= n_components``, different row counts
            without ``pairs``, invalid pairs, no more than ``n_components`` pairs (too
            few cells to train on), or paired rows of ``x`` or ``y`` that are all
            identical (no variation to correlate).
        RuntimeError
            If training breaks down numerically (NaN loss, or a covariance whose
            eigen-decomposition fails), or an epoch has no minibatch of more than
            ``n_components`` pairs to train on.
        """
        _check_batch_size(self.batch_size, self.n_components)  # attributes may be reset
        xa = as_dense_matrix(x, "x", min_rows=2)
        ya = as_dense_matrix(y, "y", min_rows=2)
        if pairs is None:
            if xa.shape[0] != ya.shape[0]:
                raise ValueError(
                    "DCCA needs paired cells: x and y must have the same number of rows "
                    f"(or pass pairs=(ix, iy)); got {xa.shape[0]} and {ya.shape[0]}"
                )
            pairs = "all"
        if isinstance(pairs, str) and pairs == "all":
            check_row_pairs(x, y, "DCCA")
        ix, iy = _parse_pairs(pairs, xa.shape[0], ya.shape[0])
        if ix.size <= self.n_components:
            raise ValueError(
                f"DCCA needs more than n_components={self.n_components} pairs; got {ix.size}"
            )
        check_varies(xa, ya, ix, iy, "DCCA")
        self._fitted = False
        fx, fy = self._fit_preprocessing(xa, ya, x, y)
        self.pairs_ = (ix, iy)
        dev = self.device
        rng = np.random.default_rng(self.seed)
        px = torch.as_tensor(fx[ix], dtype=torch.float32, device=dev)
        py = torch.as_tensor(fy[iy], dtype=torch.float32, device=dev)
        k = ix.size
        min_last = max(self.batch_size // 2, 2 * self.n_components)
        history: list[float] = []
        with _seeded(self.seed, dev):
            net_x = _mlp(fx.shape[1], self.hidden, self.n_components, nn.ReLU).to(dev)
            net_y = _mlp(fy.shape[1], self.hidden, self.n_components, nn.ReLU).to(dev)
            opt = torch.optim.Adam(
                [*net_x.parameters(), *net_y.parameters()],
                lr=self.lr,
                weight_decay=self.weight_decay,
            )
            for epoch in range(self.max_epochs):
                net_x.train()
                net_y.train()
                total, count = 0.0, 0
                for b in _batches(rng.permutation(k), self.batch_size, min_last):
                    if len(b) <= self.n_components:  # too few cells for the covariances
                        continue
                    bt = torch.as_tensor(b, device=dev)
                    try:
                        loss = dcca_loss(
                            net_x(px[bt]), net_y(py[bt]), self.r1, self.r2, self.eps
                        )
                    except torch.linalg.LinAlgError as err:  # NaN / degenerate outputs
                        raise RuntimeError(
                            f"DCCA loss became NaN at epoch {epoch + 1} (the output "
                            f"covariance could not be decomposed: {err}); try a lower lr "
                            "or larger r1 / r2, and check that the paired cells vary"
                        ) from err
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(b)
                    count += len(b)
                if count == 0:  # never a silent "loss 0.0" for an epoch without training
                    raise RuntimeError(
                        f"DCCA ran no training step in epoch {epoch + 1}: no minibatch "
                        f"had more than n_components={self.n_components} of the {k} "
                        f"pairs (batch_size={self.batch_size})"
                    )
                history.append(total / count)
                if not math.isfinite(history[-1]):
                    raise RuntimeError(
                        f"DCCA loss became {history[-1]} at epoch {epoch + 1}; "
                        "try a lower lr or larger r1 / r2"
                    )
                if self.verbose and ((epoch + 1) % 10 == 0 or epoch == 0):
                    print(
                        f"DCCA epoch {epoch + 1}/{self.max_epochs}: loss {history[-1]:.4f}"
                    )
        self.net_x_, self.net_y_ = net_x.eval(), net_y.eval()
        self.history_ = {"loss": history}
        hx, hy = _apply(net_x, fx, dev), _apply(net_y, fy, dev)
        (
            self.mean_x_,
            self.mean_y_,
            self.x_weights_,
            self.y_weights_,
            self.correlations_,
        ) = _linear_cca(hx[ix], hy[iy], self.n_components, self.r1)
        self._x_emb = self._finish((hx - self.mean_x_) @ self.x_weights_)
        self._y_emb = self._finish((hy - self.mean_y_) @ self.y_weights_)
        self._fitted = True
        return self

    def _finish(self, u: np.ndarray) -> np.ndarray:
        return _l2_rows(u) if self.l2_normalize else u

    def embed_x(self, x: Any = None) -> np.ndarray:
        """Common-space embedding of ``x`` cells, ``(n, n_components)``.

        Parameters
        ----------
        x
            New cells of modality 1 (same features as in :meth:`fit`); ``None`` returns
            the embedding of all cells given to :meth:`fit`.

        Returns
        -------
        The ``(n, n_components)`` embedding: the network outputs projected onto the
        canonical directions (L2-normalised per cell when ``l2_normalize``).
        """
        self._check_fitted()
        if x is None:
            return self._x_emb.copy()
        h = _apply(self.net_x_, self._features(x, "x"), self.device)
        return self._finish((h - self.mean_x_) @ self.x_weights_)

    def embed_y(self, y: Any = None) -> np.ndarray:
        """Common-space embedding of ``y`` cells, ``(n, n_components)``.

        Parameters
        ----------
        y
            New cells of modality 2 (same features as in :meth:`fit`); ``None`` returns
            the embedding of all cells given to :meth:`fit`.

        Returns
        -------
        The ``(n, n_components)`` embedding: the network outputs projected onto the
        canonical directions (L2-normalised per cell when ``l2_normalize``).
        """
        self._check_fitted()
        if y is None:
            return self._y_emb.copy()
        h = _apply(self.net_y_, self._features(y, "y"), self.device)
        return self._finish((h - self.mean_y_) @ self.y_weights_)

