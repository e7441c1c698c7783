"""Trainers: one ``Trainer(init, step)`` contract for first- and second-order methods.

* ``sgd``, ``rmsprop``, ``from_optax`` — first order, built on optax;
* ``natural_gradient`` — the Fisher-preconditioned gradient (empirical, true or Monte Carlo
  Fisher; dense Cholesky or matrix-free CG);
* ``newton`` — damped Newton with line search, Gauss-Newton or saddle-free curvature, dense or
  Hessian-free CG.
"""

from jaxcalc.trainers._base import Metrics, Trainer
from jaxcalc.trainers._first_order import from_optax, rmsprop, sgd
from jaxcalc.trainers._natural_gradient import natural_gradient
from jaxcalc.trainers._newton import newton

__all__ = ["Trainer", "Metrics", "sgd", "rmsprop", "from_optax", "natural_gradient", "newton"]
