"""First-order trainers: any optax transformation, SGD (+ momentum) and the seeds' RMS rule."""

from __future__ import annotations

import optax

from jaxcalc._types import LossFn
from jaxcalc.trainers._base import (Trainer, check_batch, check_learning_rate, grad_norm,
                                    value_and_grad)


def from_optax(loss_fn: LossFn, transformation: optax.GradientTransformation) -> Trainer:
    """A ``Trainer`` from any optax ``GradientTransformation`` (adam, schedules, chains, ...).

    ``step`` computes the loss and gradient at ``params``, asks the transformation for updates
    (passing ``params``, as weight decay needs) and applies them. The state is the optax state.
    """
    if not isinstance(transformation, optax.GradientTransformation):
        raise TypeError("from_optax: transformation must be an optax.GradientTransformation, got "
                        f"{type(transformation).__name__}")

    def init(params):
        return transformation.init(params)

    def step(params, state, batch):
        batch = check_batch("from_optax.step", batch)
        loss, grads = value_and_grad("from_optax.step", loss_fn, params, batch)
        updates, state = transformation.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return params, state, {"loss": loss, "grad_norm": grad_norm(grads)}

    return Trainer(init, step)


def sgd(loss_fn: LossFn, learning_rate, *, momentum: float = 0.0, nesterov: bool = False) -> Trainer:
    r"""Gradient descent :math:`\theta \leftarrow \theta - \eta g` (seed 000's ``gradient_descent``),
    optionally with heavy-ball ``momentum`` :math:`m \leftarrow \mu m + g` (Polyak 1964) or Nesterov
    momentum (Sutskever et al., 2013). ``learning_rate`` may be an optax schedule.
    """
    check_learning_rate("sgd", learning_rate)
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"sgd: momentum must be in [0, 1), got {momentum!r}")
    if nesterov and momentum == 0:
        raise ValueError("sgd: nesterov=True needs momentum > 0")
    return from_optax(loss_fn, optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))


def rmsprop(loss_fn: LossFn, learning_rate, *, decay: float = 0.9, eps: float = 1e-8) -> Trainer:
    r"""The seeds' RMS-style adaptive rate (seed 002, slide 6; Tieleman & Hinton 2012):

    .. math:: v \leftarrow \beta v + (1 - \beta) g^2 \;(v_0 = 0), \qquad
              \theta \leftarrow \theta - \eta\, g / (\sqrt{v} + \epsilon)

    Built on optax: its trajectory equals ``optax.rmsprop(lr, decay=β, eps=ε, eps_in_sqrt=False)``.
    """
    check_learning_rate("rmsprop", learning_rate)
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"rmsprop: decay must be in [0, 1), got {decay!r}")
    if not float(eps) >= 0:
        raise ValueError(f"rmsprop: eps must be >= 0, got {eps!r}")
    return from_optax(loss_fn, optax.rmsprop(learning_rate, decay=decay, eps=eps, eps_in_sqrt=False))
