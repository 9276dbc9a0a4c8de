"""jaxeit: JAX-native, differentiable Electrical Impedance Tomography.

Importing jaxeit enables float64 in JAX (``jax_enable_x64``): the FEM needs it.
Networks choose float32 explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)

from . import mesh, protocol  # noqa: E402
from .forward import ForwardModel  # noqa: E402
from .mesh import Mesh  # noqa: E402
from .protocol import Protocol  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ForwardModel", "Mesh", "Protocol", "mesh", "protocol", "__version__"]
