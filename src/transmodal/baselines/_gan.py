"""Cycle-consistent GANs between modalities: CycleGAN (MLP version) and MAGAN."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._utils import resolve_device
from ._base import as_dense_matrix, check_float, check_int, check_row_pairs, refuse_constant
from ._cca import _check_space, _parse_pairs, _PreprocessedBaseline
from ._dcca import _apply, _check_hidden, _mlp, _seeded

_GAN_LOSSES = ("lsgan", "bce")
_CORRESPONDENCE = (None, "mse", "cosine")


class _LeakyReLU(nn.LeakyReLU):
    def __init__(self) -> None:
        super().__init__(0.2)


def _cycle_order(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """``length`` indices from successive random permutations of ``range(n)``."""
    reps = -(-length // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:length]


class _CycleGANBase(_PreprocessedBaseline):
    """Shared training loop of :class:`CycleGAN` and :class:`MAGAN`."""

    paired = False
    _supervised = False

    def __init__(
        self,
        *,
        hidden_g: Sequence[int] = (256, 256),
        hidden_d: Sequence[int] = (256, 128),
        lam_cycle: float = 10.0,
        gan_loss: Literal["lsgan", "bce"] = "lsgan",
        max_epochs: int = 100,
        batch_size: int = 128,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        log1p: bool = True,
        scale: bool = True,
        n_pca: int | None = 100,
        seed: int = 0,
        device: str | torch.device = "cpu",
        verbose: bool = False,
    ) -> None:
        self.hidden_g = _check_hidden(hidden_g, "hidden_g")
        self.hidden_d = _check_hidden(hidden_d, "hidden_d")
        check_float(lam_cycle, "lam_cycle", positive=False)
        if gan_loss not in _GAN_LOSSES:
            raise ValueError(
                f"gan_loss must be one of {list(_GAN_LOSSES)}; got {gan_loss!r}"
            )
        check_int(max_epochs, "max_epochs", minimum=1)
        check_int(batch_size, "batch_size", minimum=1)
        check_float(lr, "lr", positive=True)
        if len(tuple(betas)) != 2 or not all(0 <= float(b) < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1); got {betas!r}")
        check_int(n_pca, "n_pca", minimum=1, allow_none=True)
        check_int(seed, "seed", minimum=0)
        self.device = resolve_device(device)
        self.lam_cycle = float(lam_cycle)
        self.gan_loss = gan_loss
        self.max_epochs = int(max_epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.log1p = bool(log1p)
        self.scale = bool(scale)
        self.n_pca = n_pca
        self.seed = int(seed)
        self.verbose = bool(verbose)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(hidden_g={self.hidden_g}, hidden_d={self.hidden_d}, "
            f"lam_cycle={self.lam_cycle}, max_epochs={self.max_epochs}, "
            f"batch_size={self.batch_size}, lr={self.lr})"
        )

    # ------------------------------------------------------------------ losses
    def _adv(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.full_like(logits, 1.0 if real else 0.0)
        if self.gan_loss == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def _extra_losses(
        self,
        g: nn.Module,
        f: nn.Module,
        xb: torch.Tensor,
        fake_y: torch.Tensor,
        yb: torch.Tensor,
        fake_x: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Additional generator losses (already weighted) of subclasses."""
        return {}

    def _prepare_extra(self, fx: np.ndarray, fy: np.ndarray, pairs: Any) -> None:
        if pairs is not None:
            raise ValueError(f"{type(self).__name__} does not use pairs; use MAGAN")

    # ------------------------------------------------------------------ fitting
    def _fit(self, x: Any, y: Any, pairs: Any) -> _CycleGANBase:
        xa = as_dense_matrix(x, "x", min_rows=2)
        ya = as_dense_matrix(y, "y", min_rows=2)
        refuse_constant(xa, ya, f"{type(self).__name__} has no distribution to match")
        if isinstance(pairs, str) and pairs == "all":
            check_row_pairs(x, y, type(self).__name__)
        self._fitted = False
        fx, fy = self._fit_preprocessing(xa, ya, x, y)
        self._prepare_extra(fx, fy, pairs)
        dev = self.device
        tx = torch.as_tensor(fx, dtype=torch.float32, device=dev)
        ty = torch.as_tensor(fy, dtype=torch.float32, device=dev)
        nx, ny = fx.shape[0], fy.shape[0]
        rng = np.random.default_rng(self.seed)
        steps = math.ceil(max(nx, ny) / self.batch_size)
        history: dict[str, list[float]] = {}
        with _seeded(self.seed, dev):
            g = _mlp(fx.shape[1], self.hidden_g, fy.shape[1], _LeakyReLU).to(dev)
            f = _mlp(fy.shape[1], self.hidden_g, fx.shape[1], _LeakyReLU).to(dev)
            d_x = _mlp(fx.shape[1], self.hidden_d, 1, _LeakyReLU).to(dev)
            d_y = _mlp(fy.shape[1], self.hidden_d, 1, _LeakyReLU).to(dev)
            opt_g = torch.optim.Adam(
                [*g.parameters(), *f.parameters()], lr=self.lr, betas=self.betas
            )
            opt_d = torch.optim.Adam(
                [*d_x.parameters(), *d_y.parameters()], lr=self.lr, betas=self.betas
            )
            for m in (g, f, d_x, d_y):
                m.train()
            for epoch in range(self.max_epochs):
                ox = _cycle_order(rng, nx, steps * self.batch_size)
                oy = _cycle_order(rng, ny, steps * self.batch_size)
                sums: dict[str, float] = {}
                for s in range(steps):
                    sl = slice(s * self.batch_size, (s + 1) * self.batch_size)
                    xb = tx[torch.as_tensor(ox[sl], device=dev)]
                    yb = ty[torch.as_tensor(oy[sl], device=dev)]
                    # generators
                    fake_y, fake_x = g(xb), f(yb)
                    adv = self._adv(d_y(fake_y), True) + self._adv(d_x(fake_x), True)
                    cyc = F.l1_loss(f(fake_y), xb) + F.l1_loss(g(fake_x), yb)
                    extra = self._extra_losses(g, f, xb, fake_y, yb, fake_x)
                    loss_g = adv + self.lam_cycle * cyc + sum(extra.values())
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    opt_g.step()
                    # discriminators
                    loss_d = 0.5 * (
                        self._adv(d_y(yb), True)
                        + self._adv(d_y(fake_y.detach()), False)
                        + self._adv(d_x(xb), True)
                        + self._adv(d_x(fake_x.detach()), False)
                    )
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                    terms = {
                        "discriminator": loss_d,
                        "adversarial": adv,
                        "cycle": cyc,
                        **extra,
                    }
                    for key, val in terms.items():
                        sums[key] = sums.get(key, 0.0) + val.item()
                for key, val in sums.items():
                    history.setdefault(key, []).append(val / steps)
                if not all(math.isfinite(v[-1]) for v in history.values()):
                    raise RuntimeError(
                        f"{type(self).__name__}: a loss became non-finite at epoch "
                        f"{epoch + 1}; try a lower lr"
                    )
                if self.verbose and ((epoch + 1) % 10 == 0 or epoch == 0):
                    msg = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items())
                    print(
                        f"{type(self).__name__} epoch {epoch + 1}/{self.max_epochs}: {msg}"
                    )
        self.g_, self.f_ = g.eval(), f.eval()
        self.d_x_, self.d_y_ = d_x.eval(), d_y.eval()
        self.history_ = history
        self.x_features_, self.y_features_ = fx, fy
        self._x_emb = _apply(g, fx, dev)
        self._fitted = True
        return self

    # ------------------------------------------------------------------ outputs
    def embed_x(self, x: Any = None) -> np.ndarray:
        """``x`` cells mapped into ``y``'s preprocessed feature space by ``G``, ``(n, d_y)``.

        Parameters
        ----------
        x
            New cells of modality 1 (same features as in :meth:`fit`); ``None`` returns
            the embedding of the training cells.

        Returns
        -------
        The ``(n, d_y)`` embedding ``G(x)``.
        """
        self._check_fitted()
        if x is None:
            return self._x_emb.copy()
        return _apply(self.g_, self._features(x, "x"), self.device)

    def embed_y(self, y: Any = None) -> np.ndarray:
        """``y`` cells as themselves: their preprocessed features, ``(n, d_y)``.

        Parameters
        ----------
        y
            New cells of modality 2 (same features as in :meth:`fit`); ``None`` returns
            the embedding of the training cells.

        Returns
        -------
        The ``(n, d_y)`` preprocessed features of the cells.
        """
        self._check_fitted()
        if y is None:
            return self.y_features_.copy()
        return self._features(y, "y")

    def translate_x_to_y(
        self, x_new: Any, *, space: Literal["features", "log", "input"] = "input"
    ) -> np.ndarray:
        """Translate ``x`` cells to modality ``y`` with the generator ``G``.

        Parameters
        ----------
        x_new
            Cells of modality 1, ``(m, p)``.
        space
            ``"features"``: ``y``'s preprocessed space (log1p, standardised, PCA,
            rescaled; equals :meth:`embed_x`); ``"log"``: ``y``'s original features on the
            log1p scale (PCA reconstruction); ``"input"``: ``y``'s input units (``"log"``
            then ``expm1``, clipped at 0; same as ``"log"`` when ``log1p=False``).

        Returns
        -------
        The translated cells, ``(m, q)`` (or ``(m, d_y)`` for ``"features"``).
        """
        self._check_fitted()
        _check_space(space)
        fx = self._features(x_new, "x", "x_new")
        return self.prep_y_.inverse_transform(_apply(self.g_, fx, self.device), space)

    def translate_y_to_x(
        self, y_new: Any, *, space: Literal["features", "log", "input"] = "input"
    ) -> np.ndarray:
        """Translate ``y`` cells to modality ``x`` with the generator ``F``.

        Parameters
        ----------
        y_new
            Cells of modality 2, ``(m, q)``.
        space
            ``"features"``: ``x``'s preprocessed space (log1p, standardised, PCA,
            rescaled); ``"log"``: ``x``'s original features on the log1p scale (PCA
            reconstruction); ``"input"``: ``x``'s input units (``"log"`` then ``expm1``,
            clipped at 0; same as ``"log"`` when ``log1p=False``).

        Returns
        -------
        The translated cells, ``(m, p)`` (or ``(m, d_x)`` for ``"features"``).
        """
        self._check_fitted()
        _check_space(space)
        fy = self._features(y_new, "y", "y_new")
        return self.prep_x_.inverse_transform(_apply(self.f_, fy, self.device), space)


_COMMON_DOC = """
    Both modalities are preprocessed separately (``log1p``, standardisation, PCA to
    ``n_pca`` components, one global rescaling to mean variance 1; fitted on the training
    cells and re-applied to new ones).  Generators ``G: x -> y`` and ``F: y -> x`` and
    discriminators ``D_x``, ``D_y`` are MLPs (LeakyReLU 0.2).  Each step draws an
    unpaired minibatch of ``x`` and of ``y`` cells (one epoch = ``ceil(max(n_x, n_y) /
    batch_size)`` steps) and updates the generators on
    ``adv(D_y(G(x)), real) + adv(D_x(F(y)), real) + lam_cycle * (|F(G(x)) - x|_1 +
    |G(F(y)) - y|_1)`` (plus the terms below), then the discriminators on
    ``(adv(D(real), real) + adv(D(fake), fake)) / 2`` per modality; ``adv`` is the
    least-squares (``"lsgan"``) or the logistic (``"bce"``) GAN loss.  Adam.

    Common embedding for evaluation: ``x`` cells are embedded in ``y``'s preprocessed
    feature space as ``G(x)`` (:meth:`embed_x`), ``y`` cells as their own preprocessed
    features (:meth:`embed_y`).  Translations use ``G`` and ``F``; by default they are
    mapped back to the target's input units (``space="input"``), or stay in its
    preprocessed space (``space="features"``) or log1p scale (``space="log"``).

    Parameters
    ----------
    hidden_g, hidden_d
        Hidden layer widths of the generators and of the discriminators.
    lam_cycle
        Weight of the cycle-consistency L1 loss.
    gan_loss
        ``"lsgan"`` (least squares) or ``"bce"``.
    max_epochs, batch_size, lr, betas
        Adam training schedule.
    log1p, scale, n_pca
        Preprocessing, see :class:`CCA`.
    seed
        Seeds initialisation, minibatches and PCA (no global random state is changed).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (CUDA, else MPS, when
        available).
    verbose
        Print the epoch losses after every 10th epoch."""


class CycleGAN(_CycleGANBase):
    __doc__ = (
        """Unpaired translation between modalities by a cycle-consistent GAN (MLP version
    of Zhu et al., ICCV 2017, for vector data).
"""
        + _COMMON_DOC
        + """

    Attributes
    ----------
    history_
        Per-epoch means of the losses: ``"discriminator"``, ``"adversarial"`` (generator
        side), ``"cycle"`` (unweighted).
    g_, f_, d_x_, d_y_
        The trained networks.
    x_features_, y_features_
        The preprocessed training features.
    """
    )

    paired = False

    def fit(self, x: Any, y: Any) -> CycleGAN:
        """Train on unpaired cells.

        Parameters
        ----------
        x
            Modality 1, ``(n_x, p)``: dense array, scipy sparse matrix or AnnData.
        y
            Modality 2, ``(n_y, q)``, likewise; its rows need not correspond to those of
            ``x``.

        Returns
        -------
        ``self``.
        """
        return self._fit(x, y, None)


class MAGAN(_CycleGANBase):
    __doc__ = (
        """Manifold-aligning GAN (Amodio & Krishnaswamy, ICML 2018), optionally with anchor
    pairs.
"""
        + _COMMON_DOC
        + """
    lam_pairs
        Weight of the supervised loss on known pairs: with ``pairs=(ix, iy)`` in
        :meth:`fit`, every step also draws a minibatch of pairs and adds
        ``lam_pairs * (mse(G(x_i), y_i) + mse(F(y_i), x_i))`` (the semi-supervised MAGAN
        used for the paper's comparison with anchor pairs).
    correspondence
        MAGAN's own unsupervised correspondence loss between a cell and its translation,
        ``None``, ``"mse"`` (``mse(G(x), x) + mse(F(y), y)``) or ``"cosine"``
        (``1 - cos``).  It is only meaningful when the features of ``x`` and ``y``
        correspond one to one (same features, no PCA: ``n_pca=None`` or at least the
        number of features), and needs equal preprocessed dimensions; :meth:`fit` refuses
        it when a modality is reduced by its own PCA (separate PCA bases have unrelated
        axes).  For modalities without shared features (e.g. RNA and ATAC) leave it
        ``None``: without pairs MAGAN then reduces to :class:`CycleGAN`.
    lam_correspondence
        Its weight.
    **kwargs
        The remaining keyword arguments, those of :class:`CycleGAN` (``hidden_g`` to
        ``verbose`` above).

    Attributes
    ----------
    history_
        Per-epoch means of the losses: ``"discriminator"``, ``"adversarial"``,
        ``"cycle"`` (unweighted), and ``"supervised"`` / ``"correspondence"`` (weighted)
        when used.
    pairs_
        The ``(ix, iy)`` anchor pairs, or ``None``.
    g_, f_, d_x_, d_y_
        The trained networks.
    """
    )

    paired = False

    def __init__(
        self,
        *,
        lam_pairs: float = 10.0,
        correspondence: Literal["mse", "cosine"] | None = None,
        lam_correspondence: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_float(lam_pairs, "lam_pairs", positive=False)
        check_float(lam_correspondence, "lam_correspondence", positive=False)
        if correspondence not in _CORRESPONDENCE:
            raise ValueError(
                f"correspondence must be one of {list(_CORRESPONDENCE)}; got {correspondence!r}"
            )
        self.lam_pairs = float(lam_pairs)
        self.correspondence = correspondence
        self.lam_correspondence = float(lam_correspondence)

    def fit(self, x: Any, y: Any, pairs: Any = None) -> MAGAN:
        """Train on cells ``x`` ``(n_x, p)`` and ``y`` ``(n_y, q)`` (dense or scipy sparse).

        Parameters
        ----------
        x, y
            The two modalities; their rows need not correspond.
        pairs
            Optional known pairs: ``(ix, iy)`` (two equal-length index arrays), an index
            array of shape ``(2, k)`` / ``(k, 2)``, or ``"all"`` (row ``i`` of ``x`` with
            row ``i`` of ``y``).  ``None``: unsupervised.

        Returns
        -------
        ``self``.

        Raises
        ------
        ValueError
            For invalid inputs or pairs, or when ``correspondence`` is set but the
            preprocessed ``x`` and ``y`` differ in width or either was reduced by its
            own PCA (more features than ``n_pca``).
        """
        return self._fit(x, y, pairs)

    def _prepare_extra(self, fx: np.ndarray, fy: np.ndarray, pairs: Any) -> None:
        if self.correspondence is not None:
            if fx.shape[1] != fy.shape[1]:
                raise ValueError(
                    f"correspondence={self.correspondence!r} needs corresponding "
                    f"features, but the preprocessed x and y have {fx.shape[1]} and "
                    f"{fy.shape[1]} features; use correspondence=None"
                )
            # each modality has its own PCA basis: equal widths, unrelated axes
            reduced = [
                f"{side} ({prep.n_features_in_} features)"
                for side, prep in (("x", self.prep_x_), ("y", self.prep_y_))
                if prep.pca_ is not None
            ]
            if reduced:
                raise ValueError(
                    f"correspondence={self.correspondence!r} compares features one to "
                    f"one, but n_pca={self.n_pca} reduced {' and '.join(reduced)} by a "
                    "PCA fitted per modality, whose axes do not correspond; pass "
                    "n_pca=None (or at least the number of features) or "
                    "correspondence=None"
                )
        self.pairs_ = (
            None if pairs is None else _parse_pairs(pairs, fx.shape[0], fy.shape[0])
        )
        self._pair_order: np.ndarray | None = None
        if self.pairs_ is not None:
            ix, iy = self.pairs_
            dev = self.device
            self._px = torch.as_tensor(fx[ix], dtype=torch.float32, device=dev)
            self._py = torch.as_tensor(fy[iy], dtype=torch.float32, device=dev)
            self._pair_rng = np.random.default_rng(self.seed + 1)
            self._pair_pos = 0

    def _next_pairs(self) -> torch.Tensor:
        k = self._px.shape[0]
        b = min(self.batch_size, k)
        if self._pair_order is None or self._pair_pos + b > len(self._pair_order):
            self._pair_order = self._pair_rng.permutation(k)
            self._pair_pos = 0
        idx = self._pair_order[self._pair_pos : self._pair_pos + b]
        self._pair_pos += b
        return torch.as_tensor(idx, device=self.device)

    def _extra_losses(
        self,
        g: nn.Module,
        f: nn.Module,
        xb: torch.Tensor,
        fake_y: torch.Tensor,
        yb: torch.Tensor,
        fake_x: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.correspondence == "mse":
            out["correspondence"] = self.lam_correspondence * (
                F.mse_loss(fake_y, xb) + F.mse_loss(fake_x, yb)
            )
        elif self.correspondence == "cosine":
            out["correspondence"] = self.lam_correspondence * (
                2.0
                - F.cosine_similarity(fake_y, xb, dim=1).mean()
                - F.cosine_similarity(fake_x, yb, dim=1).mean()
            )
        if self.pairs_ is not None:
            idx = self._next_pairs()
            px, py = self._px[idx], self._py[idx]
            out["supervised"] = self.lam_pairs * (
                F.mse_loss(g(px), py) + F.mse_loss(f(py), px)
            )
        return out

    def _fit(self, x: Any, y: Any, pairs: Any) -> MAGAN:
        try:
            return super()._fit(x, y, pairs)
        finally:
            for attr in ("_px", "_py", "_pair_rng", "_pair_order", "_pair_pos"):
                self.__dict__.pop(attr, None)
