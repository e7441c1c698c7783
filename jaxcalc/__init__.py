"""jaxcalc: the calculus of neural networks in JAX.

Pure functions beside their closed-form derivatives (``activations``, ``losses``, ``layers``,
``rnn``, ``signal``), models as ``(init, apply)`` pairs (``models``), exact curvature operators
(``derivatives``), finite differences and derivative checks (``finite_diff``), curvature spectra
(``spectrum``), trainers on one ``Trainer(init, step)`` contract (``trainers``) and a resumable
training loop (``training``). See README.md and docs/architecture.md.
"""

from jaxcalc import (activations, derivatives, finite_diff, layers, losses, models, rnn, signal,
                     spectrum, trainers, training)
from jaxcalc.training import fit

__version__ = "0.1.0"

__all__ = [
    "activations",
    "losses",
    "layers",
    "rnn",
    "signal",
    "models",
    "derivatives",
    "finite_diff",
    "spectrum",
    "trainers",
    "training",
    "fit",
    "__version__",
]
