"""Shared test setup.

float64 is enabled for the whole suite: the finite-difference and closed-form comparisons need
it. Tests of float32 behaviour create float32 arrays explicitly (``dtype=jnp.float32``).

Hypothesis profiles (``--hypothesis-profile NAME`` or ``HYPOTHESIS_PROFILE=NAME``):

* ``ci`` (default): few examples per property, no deadline — the suite must stay fast on 2 cores.
* ``thorough``: many examples per property, for release runs (``pytest -m thorough``, which also
  loads this profile); property tests marked ``thorough`` are deselected unless ``-m`` names
  them.
"""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])


def pytest_configure(config):
    markexpr = config.getoption("-m", default="") or ""
    wants_thorough = "thorough" in markexpr and "not thorough" not in markexpr
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                         "thorough" if wants_thorough else "ci"))


def pytest_collection_modifyitems(config, items):
    """Deselect ``thorough`` tests unless the ``-m`` expression asks for them."""
    markexpr = config.getoption("-m", default="") or ""
    if "thorough" in markexpr:
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("thorough") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
