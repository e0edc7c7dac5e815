"""podmeta: a distributed meta-RL trainer (Launchpad actors -> Reverb -> pmapped JAX learner)."""

__version__ = "0.1.0"
