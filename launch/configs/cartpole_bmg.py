"""IMPALA + BMG on CartPole-v1: the entropy cost and a learning-rate scale are meta-learned.

The agent is cartpole_impala.py's and takes one ordinary update per learner
step. Online BMG (podmeta/meta/update.py): every step recomputes, with the
current meta-parameters, the update of L - 1 + K = 2 steps ago (K = 1)
differentiably, and matches it to the bootstrapped target: the agent's
current parameters (one real update later) plus one step on the outer
objective (policy gradient, no entropy) with the agent's RMSProp. The
meta-loss is KL(pi_target || pi_K) over the newest batch's states.
Meta-learned values, the meta-loss and the meta-gradient norm are logged
under meta/ and plotted beside the return.
"""

import ml_collections

from launch.configs import cartpole_impala


def get_config() -> ml_collections.ConfigDict:
  config = cartpole_impala.get_config()
  config.meta = ml_collections.ConfigDict(dict(
      method="bmg",
      hyperparams=dict(
          entropy_cost=dict(init=0.01, low=0.0, high=0.05, transform="sigmoid"),
          learning_rate_scale=dict(init=1.0, low=0.25, high=2.0, transform="sigmoid"),
      ),
      inner_steps=1,
      target_steps=2,
      target_data="online",
      matching="kl",
      target_update="agent",
      outer_entropy_cost=0.0,
      learning_rate=1e-3,
      max_grad_norm=1.0,
      adam_eps=1e-6,
  ))
  return config
