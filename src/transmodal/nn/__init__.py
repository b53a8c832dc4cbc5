"""Network building blocks: MLPs, input transforms and registered likelihoods."""

from ._likelihoods import Likelihood, available_likelihoods, get_likelihood, register_likelihood
from ._mlp import MLPDecoder, MLPEncoder, mlp
from ._transform import InputTransform

__all__ = [
    "InputTransform",
    "Likelihood",
    "MLPDecoder",
    "MLPEncoder",
    "available_likelihoods",
    "get_likelihood",
    "mlp",
    "register_likelihood",
]
