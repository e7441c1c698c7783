"""Test helpers: compare parameter pytrees and fit histories bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np


def host_leaves(tree):
    """Leaves as NumPy arrays (typed PRNG keys as their key data)."""
    def host(x):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)
    return [host(x) for x in jax.tree_util.tree_leaves(tree)]


def trees_identical(a, b) -> bool:
    """Same structure and every leaf ``np.array_equal`` with the same dtype."""
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        return False
    return all(x.dtype == y.dtype and np.array_equal(x, y)
               for x, y in zip(host_leaves(a), host_leaves(b)))


def assert_trees_identical(a, b):
    """Same structure, dtypes, shapes and bits (``np.array_equal``)."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(host_leaves(a), host_leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), np.max(np.abs(x.astype(float) - y.astype(float)))


def assert_histories_equal(h1, h2):
    """Every history entry bit-identical except the wall clock."""
    assert set(h1) == set(h2)
    for k in h1:
        if k != "wall_time":
            assert np.array_equal(h1[k], h2[k], equal_nan=True), k
