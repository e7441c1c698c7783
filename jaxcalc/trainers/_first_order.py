"""First-order trainers: any optax transformation, SGD (+ momentum) and the seeds' RMS rule."""

from __future__ import annotations

import jax
import numpy as np
import optax

from jaxcalc._types import LossFn
from jaxcalc._validate import check_batch, check_callable
from jaxcalc.trainers._base import (Trainer, check_flag, check_learning_rate, check_real,
                                    grad_norm, value_and_grad)


def from_optax(loss_fn: LossFn, transformation: optax.GradientTransformation) -> Trainer:
    """A ``Trainer`` from any optax ``GradientTransformation`` (adam, schedules, chains, ...).

    ``step`` computes the loss and gradient at ``params``, asks the transformation for updates
    (passing ``params``, as weight decay needs) and applies them. The state is the optax state.
    A state that ``init`` made for other params is a ValueError, also where optax alone would
    broadcast it silently (a momentum buffer of another shape).
    """
    check_callable("from_optax", "loss_fn", loss_fn)
    if not isinstance(transformation, optax.GradientTransformation):
        raise TypeError("from_optax: transformation must be an optax.GradientTransformation, got "
                        f"{type(transformation).__name__}")

    def init(params):
        return transformation.init(params)

    def step(params, state, batch):
        batch, _ = check_batch("from_optax.step", batch)
        loss, grads = value_and_grad("from_optax.step", loss_fn, params, batch)
        try:
            updates, state = transformation.update(grads, state, params)
        except (ValueError, TypeError) as err:  # optax's tree_map over (grads, state) failed
            raise ValueError("from_optax.step: transformation.update failed on these params and "
                             f"state (a state made by init for other params?): {err}") from err
        _check_updates_fit_params(params, updates)
        params = optax.apply_updates(params, updates)
        return params, state, {"loss": loss, "grad_norm": grad_norm(grads)}

    return Trainer(init, step)


def _check_updates_fit_params(params, updates) -> None:
    """ValueError unless ``updates`` has the structure and leaf shapes of ``params``.

    A state made by ``init`` for params of other shapes can broadcast against the gradient
    (a momentum buffer of shape (3,) plus a gradient of shape (1,)); the updates, and then the
    params, would silently change shape. ``None`` updates (no change, as ``optax.apply_updates``
    allows) match any leaf.
    """
    is_none = lambda x: x is None  # noqa: E731
    p_leaves, p_def = jax.tree_util.tree_flatten(params, is_leaf=is_none)
    u_leaves, u_def = jax.tree_util.tree_flatten(updates, is_leaf=is_none)
    if p_def != u_def or any(u is not None and np.shape(u) != np.shape(p)
                             for p, u in zip(p_leaves, u_leaves)):
        raise ValueError("from_optax.step: state does not match params (was it made by init for "
                         f"other params?): params have leaf shapes "
                         f"{[np.shape(p) for p in p_leaves]}, the updates from the state "
                         f"{[np.shape(u) for u in u_leaves]}")


def sgd(loss_fn: LossFn, learning_rate, *, momentum: float = 0.0, nesterov: bool = False) -> Trainer:
    r"""Gradient descent :math:`\theta \leftarrow \theta - \eta g` (seed 000's ``gradient_descent``),
    optionally with heavy-ball ``momentum`` :math:`m \leftarrow \mu m + g` (Polyak 1964) or Nesterov
    momentum (Sutskever et al., 2013). ``learning_rate`` may be an optax schedule.
    """
    check_callable("sgd", "loss_fn", loss_fn)
    check_learning_rate("sgd", learning_rate)
    check_flag("sgd", "nesterov", nesterov)
    if not 0.0 <= check_real("sgd", "momentum", momentum) < 1.0:
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
    check_callable("rmsprop", "loss_fn", loss_fn)
    check_learning_rate("rmsprop", learning_rate)
    if not 0.0 <= check_real("rmsprop", "decay", decay) < 1.0:
        raise ValueError(f"rmsprop: decay must be in [0, 1), got {decay!r}")
    eps_value = check_real("rmsprop", "eps", eps)
    if not (eps_value >= 0 and np.isfinite(eps_value)):
        raise ValueError(f"rmsprop: eps must be >= 0 and finite, got {eps!r}")
    return from_optax(loss_fn, optax.rmsprop(learning_rate, decay=decay, eps=eps, eps_in_sqrt=False))
