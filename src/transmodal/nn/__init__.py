"""Network building blocks: MLPs, input transforms, registered likelihoods and
architectures."""

from ._architectures import (
    Architecture,
    available_architectures,
    get_architecture,
    register_architecture,
)
from ._likelihoods import Likelihood, available_likelihoods, get_likelihood, register_likelihood
from ._mlp import MLPDecoder, MLPEncoder, mlp
from ._transform import InputTransform

__all__ = [
    "Architecture",
    "InputTransform",
    "Likelihood",
    "MLPDecoder",
    "MLPEncoder",
    "available_architectures",
    "available_likelihoods",
    "get_architecture",
    "get_likelihood",
    "mlp",
    "register_architecture",
    "register_likelihood",
]
