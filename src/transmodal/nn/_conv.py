"""Convolutional encoder / decoder for image modalities (2-D crops or 3-D z-stacks).

Both are built from the crop shape ``(channels, *spatial)`` with one code path for 2-D and
3-D. Images travel through the library flattened (``cells x channels*pixels``) like any
other matrix; the networks reshape them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ._mlp import LatentEncoder

DEFAULT_CHANNELS = (32, 64, 128)


def _layers(n_dims: int) -> tuple[type[nn.Module], str]:
    if n_dims == 2:
        return nn.Conv2d, "bilinear"
    if n_dims == 3:
        return nn.Conv3d, "trilinear"
    raise ValueError(f"image modalities need 2-D or 3-D images, got {n_dims} spatial dimensions")


def _norm(channels: int, n_pixels: int) -> nn.Module:
    """Group normalisation of ``channels`` feature maps of ``n_pixels`` values each.

    The groups are ``gcd(8, channels)``, halved while a group would normalise fewer than 4
    values per sample: a group of one value always normalises to 0 (the block's output would
    not depend on its input), one of two to +-1, one of three keeps only a direction. Where
    even a single group holds fewer than 4 values the block is not normalised. Every map of
    the default channels, and every map of more than a few pixels, keeps ``gcd(8, channels)``
    groups.

    Parameters
    ----------
    channels
        Feature maps (channels) of the block's output.
    n_pixels
        Values per feature map (the product of its spatial size).

    Returns
    -------
    ``nn.GroupNorm``, or ``nn.Identity`` where a group would hold fewer than 4 values.
    """
    groups = math.gcd(8, channels)  # a power of 2: halving keeps it a divisor of channels
    while groups > 1 and (channels // groups) * n_pixels < 4:
        groups //= 2
    if (channels // groups) * n_pixels < 4:
        return nn.Identity()
    return nn.GroupNorm(groups, channels)


def _block(
    conv: type[nn.Module], c_in: int, c_out: int, stride: int, out_size: Sequence[int]
) -> list[nn.Module]:
    """``conv 3 -> GroupNorm -> LeakyReLU`` (GroupNorm: independent of the batch size).

    ``out_size`` is the spatial size of the block's output, which sets the groups
    (:func:`_norm`).
    """
    return [
        conv(c_in, c_out, kernel_size=3, stride=stride, padding=1),
        _norm(c_out, math.prod(out_size)),
        nn.LeakyReLU(),
    ]


def spatial_sizes(spatial: Sequence[int], n_stages: int) -> list[tuple[int, ...]]:
    """Spatial size after each stride-2 stage (``ceil(s / 2)``), starting with the input."""
    sizes = [tuple(int(s) for s in spatial)]
    for _ in range(n_stages):
        sizes.append(tuple((s + 1) // 2 for s in sizes[-1]))
    return sizes


class ConvEncoder(LatentEncoder):
    """Image -> latent point: stride-2 convolution stages, then one linear layer.

    Shares the output handling of every encoder (:class:`~transmodal.nn._mlp.LatentEncoder`:
    variational posterior, per-modality batch standardisation of the latent), so the rest
    of the model treats both alike.

    Parameters
    ----------
    image_shape
        ``(channels, H, W)`` or ``(channels, D, H, W)``.
    n_latent
        Output dimension (shared + private latent coordinates).
    channels
        Channels of the convolution stages; each halves every spatial size.
    dropout
        Dropout before the final linear layer.
    input_dropout, variational, standardize
        As in :class:`~transmodal.nn._mlp.LatentEncoder` (``input_dropout`` drops pixels).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        n_latent: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        *,
        dropout: float = 0.1,
        input_dropout: float = 0.0,
        standardize: bool = True,
        variational: bool = False,
    ) -> None:
        c, *spatial = (int(s) for s in image_shape)
        conv, _ = _layers(len(spatial))
        layers: list[nn.Module] = [nn.Unflatten(1, (c, *spatial))]
        width = c
        sizes = spatial_sizes(spatial, len(channels))
        for stage, ch in enumerate(channels, start=1):
            layers += _block(conv, width, ch, stride=2, out_size=sizes[stage])
            width = ch
        last = sizes[-1]
        layers.append(nn.Flatten(1))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width * math.prod(last), n_latent * (2 if variational else 1)))
        super().__init__(
            nn.Sequential(*layers), n_latent, input_dropout=input_dropout,
            standardize=standardize, variational=variational,
        )


class ConvDecoder(nn.Module):
    """Latent point -> image-shaped parameter maps, mirroring :class:`ConvEncoder`.

    A linear layer to the smallest feature map, then, stage by stage in reverse, an
    upsampling to the encoder's size at that stage and a 3x3 convolution to the encoder's
    channels there; the last stage upsamples to the full size and a 3x3 convolution gives
    ``n_out_channels`` maps. Upsampling to exact sizes reproduces any crop size.

    Parameters
    ----------
    n_latent
        Input dimension.
    image_shape
        ``(channels, H, W)`` or ``(channels, D, H, W)`` of the modality.
    channels
        Channels of the encoder's stages (the decoder runs through them in reverse).
    n_out_channels
        Output maps (parameters per image channel times image channels).
    """

    def __init__(
        self,
        n_latent: int,
        image_shape: Sequence[int],
        channels: Sequence[int] = DEFAULT_CHANNELS,
        *,
        n_out_channels: int,
    ) -> None:
        super().__init__()
        _, *spatial = (int(s) for s in image_shape)
        conv, mode = _layers(len(spatial))
        sizes = spatial_sizes(spatial, len(channels))
        chans = list(channels)
        layers: list[nn.Module] = [
            nn.Linear(n_latent, chans[-1] * math.prod(sizes[-1])),
            nn.LeakyReLU(),
            nn.Unflatten(1, (chans[-1], *sizes[-1])),
        ]
        width = chans[-1]
        for stage in range(len(chans) - 1, 0, -1):  # mirror of encoder stages L-1 .. 1
            layers.append(nn.Upsample(size=sizes[stage], mode=mode, align_corners=False))
            layers += _block(conv, width, chans[stage - 1], stride=1, out_size=sizes[stage])
            width = chans[stage - 1]
        layers.append(nn.Upsample(size=sizes[0], mode=mode, align_corners=False))
        layers.append(conv(width, n_out_channels, kernel_size=3, padding=1))
        self.net = nn.Sequential(*layers)
        self.n_out = n_out_channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(z)


class ImageHead(nn.Module):
    """Split a decoder's parameter maps into the likelihood's flattened parameters."""

    def __init__(self, keys: Sequence[str], n_channels: int) -> None:
        super().__init__()
        self.keys = tuple(keys)
        self.n_channels = int(n_channels)

    def forward(self, h: torch.Tensor, library=None) -> dict[str, torch.Tensor]:  # noqa: D102
        c = self.n_channels
        return {k: h[:, i * c : (i + 1) * c].flatten(1) for i, k in enumerate(self.keys)}


def random_dihedral(x: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """Random flips of every spatial axis and (square images) 90-degree rotations, per image.

    ``x`` is flattened ``(n, channels * pixels)``; nuclei have no orientation, so every
    element of the dihedral group of the image plane (and flips along z) is a valid view.
    """
    n = x.shape[0]
    img = x.reshape(n, *image_shape)
    n_spatial = len(image_shape) - 1
    shape = (n,) + (1,) * (img.dim() - 1)
    for axis in range(2, 2 + n_spatial):
        flip = torch.rand(n, device=x.device) < 0.5
        img = torch.where(flip.view(shape), img.flip(axis), img)
    if image_shape[-1] == image_shape[-2]:
        rot = torch.rand(n, device=x.device) < 0.5
        img = torch.where(rot.view(shape), img.rot90(1, dims=(-2, -1)), img)
    return img.reshape(n, -1)
