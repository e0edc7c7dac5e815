"""Test harness: 8 forced CPU devices unless the caller chose otherwise.

XLA reads XLA_FLAGS when JAX first initialises its backends, so it is set here,
before any test module imports jax. `make test` sets it too.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
