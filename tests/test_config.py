"""Config validation: every bad field is named in a ValueError."""

import copy
import dataclasses
import pickle

import pytest

from podmeta.config import Config
from podmeta.meta.config import MetaConfig


def test_defaults_are_valid_frozen_and_round_trip():
  c = Config()
  with pytest.raises(dataclasses.FrozenInstanceError):
    c.num_actors = 3
  with pytest.raises(dataclasses.FrozenInstanceError):
    c.meta.method = "bmg"
  meta = Config.from_mapping(dict(meta=dict(method="bmg", hyperparams=dict(
      entropy_cost=dict(init=0.1, low=0.0, high=0.5)))))
  for config in (c, meta):
    assert Config.from_mapping(config.to_dict()) == config
  # The meta-learned hyperparameters' mapping is as frozen as the rest.
  with pytest.raises(TypeError, match="read-only"):
    meta.meta.hyperparams["discount"] = meta.meta.hyperparams["entropy_cost"]
  with pytest.raises(TypeError, match="read-only"):
    meta.meta.hyperparams.pop("entropy_cost")
  assert pickle.loads(pickle.dumps(meta)) == meta
  assert copy.deepcopy(meta) == meta and hash(meta) == hash(copy.deepcopy(meta))
  assert MetaConfig(method="bmg", hyperparams={"entropy_cost": {"init": 0.1}}) == (
      MetaConfig.from_mapping({"method": "bmg", "hyperparams": {"entropy_cost": {"init": 0.1}}}))


@pytest.mark.parametrize("values, field", [
    ({"num_actors": 0}, "num_actors"),
    ({"num_actors": -2}, "num_actors"),
    ({"unroll_lenght": 10}, "unroll_lenght"),
    ({"batch_size": 0}, "batch_size"),
    ({"discount": 1.5}, "discount"),
    ({"optimizer": "sgdx"}, "optimizer"),
    ({"replay": "prioritised"}, "replay"),
    ({"hidden_sizes": (64, 0)}, "hidden_sizes"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"num_actors": 2.5}, "num_actors"),
    ({"max_env_steps": 0}, "max_env_steps"),
    ({"max_abs_reward": -1.0}, "max_abs_reward"),
    ({"torso": "resnet"}, "torso"),
    ({"torso_norm": "batch"}, "torso_norm"),
    ({"torso": "conv", "torso_norm": "layer"}, "torso_norm"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"weight_decay_towards": "mean"}, "weight_decay_towards"),
    ({"replay_max_size": 4, "batch_size": 8}, "replay_max_size"),
])
def test_bad_values_name_the_field(values, field):
  with pytest.raises(ValueError, match=f"'{field}'"):
    Config.from_mapping(values)


def test_from_mapping_coerces_types():
  c = Config.from_mapping({"learning_rate": 1, "hidden_sizes": [32, 32], "num_actors": 4.0})
  assert c.learning_rate == 1.0 and isinstance(c.learning_rate, float)
  assert c.hidden_sizes == (32, 32)
  assert c.num_actors == 4 and isinstance(c.num_actors, int)
  assert c.replace(num_actors=7).num_actors == 7


def test_each_choice_list_matches_what_implements_it():
  """The names a config validates against are exactly the ones the code builds."""
  from podmeta import config as config_lib
  from podmeta import learning
  from podmeta import losses
  from podmeta import networks
  from podmeta.meta import config as meta_config
  assert set(config_lib.TORSOS) == set(networks.TORSOS)
  for name in config_lib.OPTIMIZERS:
    learning.make_optimizer(name, 1e-3, 1.0)
  with pytest.raises(ValueError, match="unknown optimizer"):
    learning.make_optimizer("not_an_optimizer", 1e-3, 1.0)
  for anchor in config_lib.WEIGHT_DECAY_ANCHORS:
    learning.make_optimizer("sgd", 1e-3, 1.0, weight_decay=1e-4, weight_decay_towards=anchor)
  with pytest.raises(ValueError, match="unknown weight_decay_towards"):
    learning.make_optimizer("sgd", 1e-3, 1.0, weight_decay=1e-4, weight_decay_towards="mean")
  assert set(meta_config.HYPERPARAMETERS) == set(losses.LossHyperparams._fields) | {
      "learning_rate_scale"}
