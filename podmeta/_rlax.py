"""Imports rlax so that it works whether or not TensorFlow is already loaded.

rlax imports distrax, which imports TensorFlow Probability 0.25 (the only
release whose JAX substrate supports JAX 0.6). When TensorFlow is already in
`sys.modules` (Reverb and Launchpad import TF 2.8), TFP's package __init__
eagerly loads its TF flavour and refuses TF < 2.18, even though only the JAX
substrate is wanted. Hiding TF from `sys.modules` while TFP initialises skips
that eager load; TF itself is untouched and put back at once.
"""

import sys


def _import_rlax():
  if "tensorflow_probability" not in sys.modules:
    hidden = sys.modules.pop("tensorflow", None)
    try:
      import tensorflow_probability.substrates.jax  # noqa: F401
    finally:
      if hidden is not None:
        sys.modules["tensorflow"] = hidden
  import rlax as _rlax
  return _rlax


rlax = _import_rlax()
