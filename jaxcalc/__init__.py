"""jaxcalc: the calculus of neural networks in JAX."""

from jaxcalc import activations, derivatives, layers, models, rnn

__version__ = "0.1.0"

__all__ = ["activations", "derivatives", "layers", "models", "rnn", "__version__"]
