"""Haiku actor-critic networks: a torso (MLP, shallow or deep conv) with policy and value heads."""

import functools
import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from podmeta import distributions
from podmeta.config import CORES, GAUSSIAN_STDS, TORSO_NORMS


class Network(NamedTuple):
  """Pure functions of the agent network.

  init(key, observation) -> params, with `observation` one example with a
  leading batch axis. unroll(params, observations [B, N, ...], is_first
  [B, N], state [B, S]) -> (logits [B, N, P], values [B, N], state [B, S]):
  the network over B sequences of N steps, from the core state before the
  first step, the state reset to zeros at every step that starts an episode;
  "logits" are the parameters of `distribution` (for a Gaussian, mean and log
  std). A feed-forward network (`state_size` 0) ignores is_first and the
  state, and also has apply(params, observations) -> (logits, values) for any
  leading axes and policy(params, observations) -> logits (skipping a
  separate value torso, which acting never needs); a recurrent one has
  neither (None).
  """
  init: Callable
  apply: Optional[Callable[..., Tuple[jnp.ndarray, jnp.ndarray]]]
  policy: Optional[Callable[..., jnp.ndarray]]
  distribution: distributions.ActionDistribution
  unroll: Callable
  state_size: int


_ORTHOGONAL_RELU = hk.initializers.Orthogonal(np.sqrt(2.0))


class _LayerNormMLP(hk.Module):
  """Linear -> LayerNorm -> ReLU per layer; named as hk.nets.MLP names its
  linears, so both torsos' parameters read alike."""

  def __init__(self, hidden_sizes: Sequence[int], name="mlp"):
    super().__init__(name=name)
    self._layers = [(hk.Linear(size, w_init=_ORTHOGONAL_RELU, name=f"linear_{i}"),
                     hk.LayerNorm(axis=-1, create_scale=True, create_offset=True,
                                  name=f"layer_norm_{i}"))
                    for i, size in enumerate(hidden_sizes)]

  def __call__(self, x):
    for linear, norm in self._layers:
      x = jax.nn.relu(norm(linear(x)))
    return x


class MLPTorso(hk.Module):
  """Flattens a vector observation and applies ReLU layers (with `norm="layer"`,
  each normalised before its ReLU)."""

  def __init__(self, hidden_sizes: Sequence[int], name=None, norm: str = "none"):
    super().__init__(name=name)
    self._hidden_sizes = tuple(hidden_sizes)
    self._norm = norm

  def __call__(self, x):
    x = jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)
    if self._norm == "layer":
      return _LayerNormMLP(self._hidden_sizes)(x)
    return hk.nets.MLP(self._hidden_sizes, w_init=_ORTHOGONAL_RELU, activate_final=True)(x)


class ConvTorso(hk.Module):
  """The shallow IMPALA conv torso (Espeholt et al. 2018, Fig. 3 left).

  Images arrive as uint8 [N, H, W, C] and are scaled to [0, 1].
  """

  def __init__(self, hidden_sizes: Sequence[int], name=None):
    super().__init__(name=name)
    self._hidden_sizes = tuple(hidden_sizes)

  def __call__(self, x):
    x = x.astype(jnp.float32)
    if x.ndim == 3:
      x = x[..., None]
    x = x / 255.0
    x = jax.nn.relu(hk.Conv2D(16, kernel_shape=8, stride=4, padding="VALID")(x))
    x = jax.nn.relu(hk.Conv2D(32, kernel_shape=4, stride=2, padding="VALID")(x))
    x = hk.Flatten()(x)
    return hk.nets.MLP(self._hidden_sizes, w_init=_ORTHOGONAL_RELU, activate_final=True)(x)


class ResidualBlock(hk.Module):
  """relu, conv 3x3, relu, conv 3x3, plus the input.

  The pre-activation residual block (He et al. 2016, arXiv 1603.05027), as in
  the IMPALA paper's Fig. 3.
  """

  def __call__(self, x):
    channels = x.shape[-1]
    h = hk.Conv2D(channels, kernel_shape=3, padding="SAME")(jax.nn.relu(x))
    h = hk.Conv2D(channels, kernel_shape=3, padding="SAME")(jax.nn.relu(h))
    return x + h


class DeepConvTorso(hk.Module):
  """The deep IMPALA ResNet torso (Espeholt et al. 2018, arXiv 1802.01561, Fig. 3 right).

  Three sections of 16, 32 and 32 channels, each a 3x3 conv, a 3x3 max-pool of
  stride 2 and two residual blocks; then relu and the ReLU layers of
  `hidden_sizes` (the paper: one of 256). The paper's LSTM is left out: the
  agent is feed-forward on stacked frames. Images arrive as uint8
  [N, H, W, C] and are scaled to [0, 1].
  """

  def __init__(self, hidden_sizes: Sequence[int], channels: Sequence[int] = (16, 32, 32),
               name=None):
    super().__init__(name=name)
    self._hidden_sizes = tuple(hidden_sizes)
    self._channels = tuple(channels)

  def __call__(self, x):
    x = x.astype(jnp.float32)
    if x.ndim == 3:
      x = x[..., None]
    x = x / 255.0
    for channels in self._channels:
      x = hk.Conv2D(channels, kernel_shape=3, padding="SAME")(x)
      x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
      x = ResidualBlock()(x)
      x = ResidualBlock()(x)
    x = hk.Flatten()(jax.nn.relu(x))
    return hk.nets.MLP(self._hidden_sizes, w_init=_ORTHOGONAL_RELU, activate_final=True)(x)


TORSOS = {"mlp": MLPTorso, "conv": ConvTorso, "impala_deep": DeepConvTorso}
# Bounds of a Gaussian policy's log std: below, log-probabilities blow up and
# V-trace's ratios with them; above, actions are mostly clipped noise.
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianHead(hk.Module):
  """Mean and log std of a diagonal Gaussian, concatenated: [N, 2D].

  The mean is tanh of a linear layer, inside the [-1, 1] that actions are
  clipped to: an unbounded mean that drifts outside it gets every sample
  clipped to the same action, and the policy gradient stops moving what the
  env sees (on Pendulum, learning then collapsed to -1430 in most runs).
  `std="learned"`: one log std per action dimension, a parameter independent of
  the state (as PPO's continuous-control agents); `"state"`: a linear function
  of the torso's output. Both start at `init_std` and stay in
  [exp(LOG_STD_MIN), exp(LOG_STD_MAX)].
  """

  def __init__(self, action_dim: int, std: str, init_std: float, name="policy"):
    super().__init__(name=name)
    self._dim, self._std, self._init_log_std = action_dim, std, math.log(init_std)

  def __call__(self, h):
    mean = hk.Linear(self._dim, w_init=hk.initializers.Orthogonal(0.01), name="mean")(h)
    mean = jnp.tanh(mean)
    if self._std == "learned":
      log_std = hk.get_parameter("log_std", (self._dim,), init=hk.initializers.Constant(
          self._init_log_std))
      log_std = jnp.broadcast_to(log_std, mean.shape)
    else:
      log_std = hk.Linear(self._dim, w_init=hk.initializers.Orthogonal(0.01),
                          b_init=hk.initializers.Constant(self._init_log_std),
                          name="log_std")(h)
    return jnp.concatenate([mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)], axis=-1)


def state_size(core: str, core_size: int, shared_torso: bool) -> int:
  """Width of the flat core state: an LSTM's [hidden, cell] per torso, or 0."""
  if core == "none":
    return 0
  return 2 * core_size * (1 if shared_torso else 2)


def make_network(torso: str, hidden_sizes: Sequence[int], obs_shape: Sequence[int],
                 num_actions: int, shared_torso: bool = True, continuous: bool = False,
                 gaussian_std: str = "learned", gaussian_init_std: float = 1.0,
                 core: str = "none", core_size: int = 64,
                 torso_norm: str = "none") -> Network:
  """Builds the actor-critic network for `num_actions` discrete actions, or
  (`continuous`) a Gaussian policy over `num_actions` action dimensions.

  With `shared_torso=False` the policy and the value each get their own torso:
  on small control tasks the value regression's large gradients otherwise
  swamp the policy's in the shared layers. `core="lstm"` puts an LSTM of
  `core_size` units after each torso (the agent's memory; IMPALA's agents,
  Espeholt et al. 2018, Fig. 3): the network is then recurrent.
  `torso_norm="layer"` normalises an MLP torso's layers before their ReLUs.
  """
  if torso_norm not in TORSO_NORMS or (torso_norm != "none" and torso != "mlp"):
    raise ValueError(f"torso_norm {torso_norm!r} is not one of {TORSO_NORMS} for an MLP torso")
  torso_cls = (functools.partial(MLPTorso, norm=torso_norm) if torso_norm != "none"
               else TORSOS[torso])
  obs_rank = len(obs_shape)
  distribution = distributions.for_actions(num_actions, continuous)
  if continuous and gaussian_std not in GAUSSIAN_STDS:
    raise ValueError(f"unknown gaussian_std {gaussian_std!r}")
  if core not in CORES:
    raise ValueError(f"unknown core {core!r}")

  def heads(h_policy, h_value):
    # Orthogonal initialisation with a near-uniform initial policy (policy head
    # scaled by 0.01) matters a great deal for on-policy actor-critic
    # (Andrychowicz et al. 2021, arXiv 2006.05990); with haiku's default
    # initialisers CartPole oscillated around a return of 150 instead of
    # reaching 500.
    if continuous:
      logits = GaussianHead(num_actions, gaussian_std, gaussian_init_std)(h_policy)
    else:
      logits = hk.Linear(num_actions, w_init=hk.initializers.Orthogonal(0.01),
                         name="policy")(h_policy)
    if h_value is None:
      return logits, None
    value = jnp.squeeze(hk.Linear(1, w_init=hk.initializers.Orthogonal(1.0),
                                  name="value")(h_value), axis=-1)
    return logits, value

  def forward(obs, policy_only=False):
    lead_shape = obs.shape[:obs.ndim - obs_rank]
    flat = jnp.reshape(obs, (int(np.prod(lead_shape, dtype=np.int64)),) + obs.shape[len(lead_shape):])
    h_policy = torso_cls(hidden_sizes)(flat)
    h_value = None
    if not policy_only:
      h_value = h_policy if shared_torso else torso_cls(hidden_sizes, name="value_torso")(flat)
    logits, value = heads(h_policy, h_value)
    logits = logits.reshape(lead_shape + (distribution.num_params,))
    if policy_only:
      return logits
    return logits, value.reshape(lead_shape)

  if core == "none":
    transformed = hk.without_apply_rng(hk.transform(forward))
    # Every module has a fixed name, so the policy-only call reads the same
    # params; init always takes the full path, in the order it always had.
    return Network(init=transformed.init, apply=transformed.apply,
                   policy=lambda params, obs: transformed.apply(params, obs, policy_only=True),
                   distribution=distribution,
                   unroll=lambda params, obs, is_first, state: (
                       *transformed.apply(params, obs), state),
                   state_size=0)

  width = 2 * core_size

  def lstm(h, is_first, state, name):
    """h [B, N, F] through a resetting LSTM from state [B, 2H]: ([B, N, H], [B, 2H])."""
    cell = hk.ResetCore(hk.LSTM(core_size, name=name))
    initial = hk.LSTMState(hidden=state[:, :core_size], cell=state[:, core_size:])
    out, final = hk.dynamic_unroll(
        cell, (jnp.swapaxes(h, 0, 1), jnp.swapaxes(is_first, 0, 1)), initial)
    return jnp.swapaxes(out, 0, 1), jnp.concatenate([final.hidden, final.cell], -1)

  def recurrent(obs, is_first, state):
    b, n = is_first.shape
    flat = jnp.reshape(obs, (b * n,) + obs.shape[2:])
    h_policy, policy_state = lstm(torso_cls(hidden_sizes)(flat).reshape(b, n, -1),
                                  is_first, state[:, :width], "lstm")
    if shared_torso:
      h_value, new_state = h_policy, policy_state
    else:
      h_value, value_state = lstm(
          torso_cls(hidden_sizes, name="value_torso")(flat).reshape(b, n, -1),
          is_first, state[:, width:], "value_lstm")
      new_state = jnp.concatenate([policy_state, value_state], -1)
    logits, value = heads(h_policy.reshape(b * n, -1), h_value.reshape(b * n, -1))
    return logits.reshape(b, n, -1), value.reshape(b, n), new_state

  transformed = hk.without_apply_rng(hk.transform(recurrent))
  size = state_size(core, core_size, shared_torso)

  def init(key, obs):
    return transformed.init(key, obs[:, None], jnp.ones(obs.shape[:1] + (1,), jnp.bool_),
                            jnp.zeros(obs.shape[:1] + (size,), jnp.float32))

  return Network(init=init, apply=None, policy=None, distribution=distribution,
                 unroll=transformed.apply, state_size=size)

