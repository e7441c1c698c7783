"""Shared test setup.

float64 is enabled for the whole suite: the finite-difference and closed-form comparisons need
it. Tests of float32 behaviour create float32 arrays explicitly (``dtype=jnp.float32``).
"""

import jax

jax.config.update("jax_enable_x64", True)
