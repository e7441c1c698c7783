"""Bad-input audit of the trainers and ``fit``: one case per row of the table in docs/errors.md.

Every case raises ValueError or TypeError whose message names the function, the argument and
what was given, at construction or at trace time (so also under ``jax.jit``). Rows already
tested elsewhere are not repeated here; the table names those tests
(``tests/test_trainers.py``, ``tests/test_training.py``, ``tests/test_faults.py``).

The ``fit`` rows marked xfail need checks in ``jaxcalc/training.py`` that are not there yet;
they are strict, so they start failing (as XPASS) once the checks land: then drop the mark.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcalc import trainers
from jaxcalc.trainers import Trainer
from jaxcalc.training import fit


def _least_squares():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3))
    return jnp.asarray(x), jnp.asarray(x @ np.array([1.0, -2.0, 0.5]))


X, Y = _least_squares()
BATCH = (X, Y)
P0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
KEY = jax.random.PRNGKey(0)


def lsq(params, batch):
    return 0.5 * jnp.mean(jnp.square(batch[0] @ params["w"] + params["b"] - batch[1]))


def linear_apply(params, x):
    return x @ params["w"] + params["b"]


def lsq_of_output(out, y):
    return 0.5 * jnp.mean(jnp.square(out - y))


# ----------------------------------------------------------------------------- constructors

GAUSS = dict(apply_fn=linear_apply, likelihood="gaussian")
CONSTRUCTOR_ROWS = {
    # learning_rate
    "sgd-learning_rate-None": (lambda: trainers.sgd(lsq, None), TypeError,
                               r"sgd: learning_rate must be a real number, got NoneType None"),
    "newton-learning_rate-str": (lambda: trainers.newton(lsq, learning_rate="1"), TypeError,
                                 r"newton: learning_rate must be a real number, got str '1'"),
    "sgd-learning_rate-bool": (lambda: trainers.sgd(lsq, True), TypeError,
                               r"sgd: learning_rate must be a real number, got bool True"),
    "natural_gradient-learning_rate-inf": (
        lambda: trainers.natural_gradient(lsq, float("inf")), ValueError,
        r"natural_gradient: learning_rate must be > 0 and finite, got inf"),
    "rmsprop-learning_rate-vector": (
        lambda: trainers.rmsprop(lsq, np.array([0.1, 0.2])), ValueError,
        r"rmsprop: learning_rate must be a scalar, got shape \(2,\)"),
    # damping
    "newton-damping-None": (lambda: trainers.newton(lsq, damping=None), TypeError,
                            r"newton: damping must be a real number, got NoneType None"),
    "natural_gradient-damping-inf": (
        lambda: trainers.natural_gradient(lsq, 0.1, damping=float("inf")), ValueError,
        r"natural_gradient: damping must be >= 0 and finite, got inf"),
    "newton-damping-vector": (lambda: trainers.newton(lsq, damping=np.ones(2)), ValueError,
                              r"newton: damping must be a scalar, got shape \(2,\)"),
    # first-order options
    "sgd-momentum-negative": (lambda: trainers.sgd(lsq, 0.1, momentum=-0.1), ValueError,
                              r"sgd: momentum must be in \[0, 1\), got -0.1"),
    "sgd-momentum-str": (lambda: trainers.sgd(lsq, 0.1, momentum="0.9"), TypeError,
                         r"sgd: momentum must be a real number, got str '0.9'"),
    "sgd-nesterov-str": (lambda: trainers.sgd(lsq, 0.1, momentum=0.9, nesterov="yes"),
                         TypeError, r"sgd: nesterov must be True or False, got str 'yes'"),
    "rmsprop-decay-negative": (lambda: trainers.rmsprop(lsq, 0.1, decay=-0.5), ValueError,
                               r"rmsprop: decay must be in \[0, 1\), got -0.5"),
    "rmsprop-decay-None": (lambda: trainers.rmsprop(lsq, 0.1, decay=None), TypeError,
                           r"rmsprop: decay must be a real number, got NoneType None"),
    "rmsprop-eps-inf": (lambda: trainers.rmsprop(lsq, 0.1, eps=float("inf")), ValueError,
                        r"rmsprop: eps must be >= 0 and finite, got inf"),
    # integer options
    "newton-cg_maxiter-float": (lambda: trainers.newton(lsq, cg_maxiter=2.5), TypeError,
                                r"newton: cg_maxiter must be an integer, got float 2.5"),
    "newton-cg_maxiter-bool": (lambda: trainers.newton(lsq, cg_maxiter=True), TypeError,
                               r"newton: cg_maxiter must be an integer, got the bool True"),
    "natural_gradient-cg_maxiter-zero": (
        lambda: trainers.natural_gradient(lsq, 0.1, cg_maxiter=0), ValueError,
        r"natural_gradient: cg_maxiter must be >= 1, got 0"),
    "natural_gradient-mc_samples-float": (
        lambda: trainers.natural_gradient(lsq, 0.1, fisher="mc", mc_samples=4.0, **GAUSS),
        TypeError, r"natural_gradient: mc_samples must be an integer, got float 4.0"),
    # flags
    "newton-line_search-str": (lambda: trainers.newton(lsq, line_search="no"), TypeError,
                               r"newton: line_search must be True or False, got str 'no'"),
    "natural_gradient-adapt_damping-int": (
        lambda: trainers.natural_gradient(lsq, 0.1, adapt_damping=1), TypeError,
        r"natural_gradient: adapt_damping must be True or False, got int 1"),
    # key
    "natural_gradient-key-int": (
        lambda: trainers.natural_gradient(lsq, 0.1, fisher="mc", key=0, **GAUSS), TypeError,
        r"natural_gradient: key must be a PRNG key \(jax.random.key\(seed\), .*got int"),
    "natural_gradient-key-batch_of_keys": (
        lambda: trainers.natural_gradient(lsq, 0.1, fisher="mc", key=jax.random.split(KEY, 3),
                                          **GAUSS),
        ValueError, r"natural_gradient: key must be a PRNG key .*got uint32 of shape \(3, 2\)"),
    # functions
    "sgd-loss_fn-not_callable": (lambda: trainers.sgd("lsq", 0.1), TypeError,
                                 r"sgd: loss_fn must be callable, got str 'lsq'"),
    "rmsprop-loss_fn-not_callable": (lambda: trainers.rmsprop(None, 0.1), TypeError,
                                     r"rmsprop: loss_fn must be callable, got NoneType None"),
    "from_optax-loss_fn-not_callable": (lambda: trainers.from_optax(3, optax.adam(0.1)),
                                        TypeError, r"from_optax: loss_fn must be callable"),
    "natural_gradient-loss_fn-not_callable": (
        lambda: trainers.natural_gradient({"loss": lsq}, 0.1), TypeError,
        r"natural_gradient: loss_fn must be callable, got dict"),
    "newton-loss_fn-not_callable": (lambda: trainers.newton(0.5), TypeError,
                                    r"newton: loss_fn must be callable, got float 0.5"),
    "natural_gradient-apply_fn-not_callable": (
        lambda: trainers.natural_gradient(lsq, 0.1, fisher="true", apply_fn="linear",
                                          likelihood="gaussian"),
        TypeError, r"natural_gradient: apply_fn must be callable, got str 'linear'"),
    "newton-apply_fn-not_callable": (
        lambda: trainers.newton(lsq, curvature="gauss_newton", apply_fn=1,
                                loss_of_output=lsq_of_output),
        TypeError, r"newton: apply_fn must be callable, got int 1"),
    "newton-loss_of_output-not_callable": (
        lambda: trainers.newton(lsq, curvature="gauss_newton", apply_fn=linear_apply,
                                loss_of_output="mse"),
        TypeError, r"newton: loss_of_output must be callable, got str 'mse'"),
}


@pytest.mark.parametrize("row", list(CONSTRUCTOR_ROWS))
def test_constructor_rejects(row):
    make, error, match = CONSTRUCTOR_ROWS[row]
    with pytest.raises(error, match=match):
        make()


def test_constructor_checks_accept_the_boundaries():
    """The checks above do not reject what is valid: NumPy/JAX scalars, np.bool_, schedules,
    a raw or typed key, integer-valued NumPy ints."""
    assert isinstance(trainers.sgd(lsq, np.float32(0.1), momentum=np.float64(0.5),
                                   nesterov=np.bool_(True)), Trainer)
    assert isinstance(trainers.rmsprop(lsq, jnp.asarray(0.01), eps=0), Trainer)
    assert isinstance(trainers.sgd(lsq, optax.linear_schedule(0.1, 0.0, 10)), Trainer)
    for key in (jax.random.PRNGKey(1), jax.random.key(1)):
        assert isinstance(trainers.natural_gradient(lsq, 0.1, fisher="mc", key=key, **GAUSS),
                          Trainer)
    assert isinstance(trainers.newton(lsq, cg_maxiter=np.int64(5), damping=0), Trainer)


@pytest.mark.parametrize("name", ["natural_gradient", "newton"])
def test_init_rejects_params_without_floating_arrays(name):
    """The second-order states hold λ in the params' dtype, so ``init`` needs a float leaf."""
    trainer = (trainers.natural_gradient(lsq, 0.1) if name == "natural_gradient"
               else trainers.newton(lsq))
    with pytest.raises(TypeError, match=rf"{name}.init: params must contain at least one "
                                        r"floating-point array, got \{'w': Array"):
        trainer.init({"w": jnp.zeros(3, jnp.int32)})


# ----------------------------------------------------------------------------- step

STEP_TRAINERS = {
    "sgd": (trainers.sgd(lsq, 0.1, momentum=0.9), "from_optax.step"),
    "natural_gradient": (trainers.natural_gradient(lsq, 0.1), "natural_gradient.step"),
    "newton": (trainers.newton(lsq), "newton.step"),
}
TRAINER_NAMES = list(STEP_TRAINERS)
JIT = pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])


def _step(name, use_jit):
    trainer, fn = STEP_TRAINERS[name]
    return trainer, (jax.jit(trainer.step) if use_jit else trainer.step), fn


@JIT
@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_step_rejects_a_bare_array_as_batch(name, use_jit):
    trainer, step, fn = _step(name, use_jit)
    with pytest.raises(ValueError, match=rf"{fn}: batch must be a non-empty tuple of arrays "
                                         r"\(inputs, targets, ...\) with a common leading "
                                         r"axis N, got \w+"):
        step(P0, trainer.init(P0), np.asarray(X))


@JIT
@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_step_rejects_a_scalar_in_the_batch(name, use_jit):
    trainer, step, fn = _step(name, use_jit)
    with pytest.raises(ValueError, match=rf"{fn}: batch arrays must share a leading dimension N,"
                                         r" got shapes \[\(8, 3\), \(\)\]"):
        step(P0, trainer.init(P0), (X, jnp.zeros(())))


@JIT
@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_step_rejects_integer_params(name, use_jit):
    trainer, step, fn = _step(name, use_jit)
    params = {"w": jnp.zeros(3), "b": jnp.zeros((), jnp.int32)}
    with pytest.raises(TypeError, match=rf"{fn}: params must hold only floating-point arrays, "
                                        r"got dtype int32 at params\['b'\]"):
        step(params, trainer.init(P0), BATCH)


@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_step_rejects_empty_params(name):
    trainer, step, fn = _step(name, False)
    with pytest.raises(TypeError, match=rf"{fn}: params must be a pytree of floating-point "
                                        r"arrays, got \{\}"):
        step({}, trainer.init(P0), BATCH)


FOREIGN_STATES = {  # trainer -> (the state of another trainer, the error it gives)
    "sgd": ("newton", r"from_optax.step: transformation.update failed on these params and "
                      r"state \(a state made by init for other params\?\)"),
    "natural_gradient": ("newton", r"natural_gradient.step: state must be the dict with keys "
                                   r"\['damping', 'key'\] that init returns, got \['damping'\]"),
    "newton": ("sgd", r"newton.step: state must be the dict with keys \['damping'\] that init "
                      r"returns, got tuple"),
}


@JIT
@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_step_rejects_the_state_of_another_trainer(name, use_jit):
    trainer, step, _ = _step(name, use_jit)
    other, match = FOREIGN_STATES[name]
    with pytest.raises(ValueError, match=match):
        step(P0, STEP_TRAINERS[other][0].init(P0), BATCH)


@JIT
def test_sgd_step_rejects_params_with_more_leaves_than_its_state(use_jit):
    trainer, step, _ = _step("sgd", use_jit)
    params = dict(P0, c=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"from_optax.step: transformation.update failed .* "
                                         r"state made by init for other params"):
        step(params, trainer.init(P0), BATCH)


@JIT
def test_sgd_step_rejects_a_state_that_would_broadcast_the_params(use_jit):
    """A momentum buffer of shape (3,) and a parameter of shape (1,) that the loss broadcasts:
    optax alone returns (3,)-shaped updates and the parameter silently grows to (3,)."""
    def broadcasting_lsq(params, batch):  # x * w broadcasts a (1,)-shaped w over x's columns
        return 0.5 * jnp.mean(jnp.square(jnp.sum(batch[0] * params["w"], axis=-1)
                                         + params["b"] - batch[1]))

    trainer = trainers.sgd(broadcasting_lsq, 0.1, momentum=0.9)
    step = jax.jit(trainer.step) if use_jit else trainer.step
    broadcasting = {"w": jnp.zeros(1), "b": jnp.zeros(())}
    with pytest.raises(ValueError, match=r"from_optax.step: state does not match params .* "
                                         r"params have leaf shapes \[\(\), \(1,\)\], the updates "
                                         r"from the state \[\(\), \(3,\)\]"):
        step(broadcasting, trainer.init(P0), BATCH)


def test_sgd_step_passes_nan_through_without_raising():
    """NaN input is not an error a jitted step can raise on (values are not known at trace
    time): the loss comes out NaN. ``fit`` turns it into FloatingPointError (see the table)."""
    trainer, step, _ = _step("sgd", True)
    params, _, metrics = step(P0, trainer.init(P0), (X.at[0, 0].set(jnp.nan), Y))
    assert np.isnan(float(metrics["loss"]))
    assert np.isnan(np.asarray(params["w"])).all()


# ----------------------------------------------------------------------------- fit

SGD = trainers.sgd(lsq, 0.1)


def _fit(**kwargs):
    args = dict(trainer=SGD, params=P0, train_data=BATCH, epochs=1, key=KEY,
                progress=False) | kwargs
    return fit(args.pop("trainer"), args.pop("params"), args.pop("train_data"), **args)


def test_fit_with_integer_params_names_them():
    with pytest.raises(TypeError, match=r"from_optax.step: params must hold only floating-point "
                                        r"arrays, got dtype int32 at params\['w'\]"):
        _fit(params={"w": jnp.zeros(3, jnp.int32), "b": jnp.zeros(())})


def test_fit_resuming_another_trainers_checkpoint_names_the_state(tmp_path):
    _fit(checkpoint_dir=tmp_path)  # an sgd checkpoint
    with pytest.raises(ValueError, match=r"newton.step: state must be the dict with keys "
                                         r"\['damping'\] that init returns"):
        _fit(trainer=trainers.newton(lsq), epochs=2, checkpoint_dir=tmp_path)


def test_fit_rejects_a_trainer_that_is_not_a_trainer():
    with pytest.raises(TypeError, match=r"fit: trainer must be a Trainer"):
        _fit(trainer=optax.sgd(0.1))  # today: AttributeError 'step' from inside the epoch


def test_fit_rejects_a_key_that_is_not_a_prng_key():
    with pytest.raises(TypeError, match=r"fit: key must be a PRNG key .*got int"):
        _fit(key=0)  # was: JAX's "invalid PRNG key data", naming neither fit nor key


def test_fit_rejects_a_callback_that_is_not_callable():
    with pytest.raises(TypeError, match=r"fit: callbacks must be callables"):
        _fit(callbacks=[3])  # today: "'int' object is not callable" after a whole epoch


def test_fit_rejects_a_checkpoint_dir_that_is_a_file(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("")
    with pytest.raises(ValueError, match=r"fit: checkpoint_dir must be a directory"):
        _fit(checkpoint_dir=path)  # today: FileExistsError after the first epoch's training
    assert os.listdir(tmp_path) == ["not_a_dir"]


def test_fit_rejects_metrics_without_a_loss():
    silent = Trainer(lambda p: (), lambda p, s, b: (p, s, {"grad_norm": jnp.zeros(())}))
    with pytest.raises(ValueError, match=r"fit: trainer.step must return metrics with a 'loss'"):
        _fit(trainer=silent)  # today: KeyError 'loss'
