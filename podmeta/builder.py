"""The single wiring point: config -> networks, nodes and the Launchpad program.

`make_program(config, run_dir)` is what both the launch script and the tests
build, so tests run the same program a user does. `preflight` checks every
input that can be checked before a node starts.

Every node process of a local_mp run imports this module to build its node,
so it imports at the top only what every node needs; the learner's modules
(losses and rlax, the meta-update, checkpointing with orbax) and Reverb with
TensorFlow are imported by the functions that use them. An actor then skips
the learner's imports, and the evaluator TensorFlow as well.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
from typing import TYPE_CHECKING, Optional

import jax
import numpy as np

import envs
from podmeta import config as config_lib
from podmeta import core
from podmeta.config import Config
from podmeta import loggers
from podmeta.logging_setup import quiet_third_party_logs
from podmeta import networks as networks_lib
from podmeta import node_entry
from podmeta import types

if TYPE_CHECKING:
  from podmeta.pod import PodSpec

# pylint: disable=g-import-not-at-top  (the heavy imports are in the functions: see above)

# Seeds of the nodes are derived from config.seed with these offsets so that
# actors, evaluator and learner never share a stream.
_LEARNER_SEED, _EVAL_SEED, _ACTOR_SEED = 0, 1, 1000
_RESTART_SEED_STRIDE = 1_000_003
_CALL_TIMEOUT_SECONDS = 5.0


def make_network(config: Config, spec: envs.EnvSpec) -> networks_lib.Network:
  return networks_lib.make_network(config.torso, config.hidden_sizes, spec.obs_shape,
                                   spec.num_actions, config.shared_torso, spec.continuous,
                                   config.gaussian_std, config.gaussian_init_std, config.core,
                                   config.core_size, config.torso_norm)


def make_optimizer(config: Config):
  from podmeta import learning
  return learning.make_optimizer(config.optimizer, config.learning_rate, config.max_grad_norm,
                                 config.rmsprop_decay, config.optimizer_eps,
                                 config.weight_decay, config.weight_decay_towards)


def loss_hyperparams(config: Config) -> losses.LossHyperparams:
  from podmeta import losses
  return losses.LossHyperparams(discount=config.discount, vtrace_lambda=config.vtrace_lambda,
                                entropy_cost=config.entropy_cost,
                                baseline_cost=config.baseline_cost)


def loss_options(config: Config) -> losses.LossOptions:
  from podmeta import losses
  return losses.LossOptions(clip_rho_threshold=config.clip_rho_threshold,
                            clip_pg_rho_threshold=config.clip_pg_rho_threshold,
                            max_abs_reward=config.max_abs_reward,
                            reward_scale=config.reward_scale)


def unrolls_per_item(config: Config) -> int:
  return types.unrolls_per_item(config.envs_per_actor, config.batch_size)


def make_spec(config: Config, spec: envs.EnvSpec) -> types.Trajectory:
  return types.trajectory_spec(spec.obs_shape, spec.obs_dtype, spec.num_actions,
                               config.unroll_length, unrolls_per_item(config),
                               spec.continuous,
                               networks_lib.state_size(config.core, config.core_size,
                                                       config.shared_torso))


def outer_hyperparams(config: Config) -> losses.LossHyperparams:
  """The meta-objective's loss: policy gradient and a fixed entropy cost, no value term."""
  return loss_hyperparams(config)._replace(entropy_cost=config.meta.outer_entropy_cost,
                                           baseline_cost=0.0)


def make_parameterisation(config: Config) -> meta_params.Parameterisation:
  from podmeta.meta import params as meta_params
  m = config.meta
  if m.context == "reward":
    return meta_params.Parameterisation(m.hyperparams, hidden_sizes=m.meta_hidden_sizes,
                                        context_size=m.context_window,
                                        pretrain_steps=m.meta_pretrain_steps)
  return meta_params.Parameterisation(m.hyperparams)


def global_batch_size(config: Config, num_processes: Optional[int] = None) -> int:
  """Unrolls per learner step over the whole pod (`batch_size` is per host).

  `num_processes` defaults to the pod this process has joined; a local_mp
  launcher never joins its pod, so it passes the pod's size.
  """
  return config.batch_size * (num_processes or jax.process_count())


def make_update_and_state(config: Config, spec: envs.EnvSpec,
                          axis_name: Optional[str] = types.DEVICE_AXIS,
                          num_processes: Optional[int] = None):
  """The pure learner step for this config and the state it starts from, on a
  pod of `num_processes` hosts (default: the one this process has joined)."""
  from podmeta import learning
  from podmeta.meta import update as meta_update
  network, optimizer = make_network(config, spec), make_optimizer(config)
  key = jax.random.PRNGKey(config.seed * 7919 + _LEARNER_SEED)
  dummy_obs = np.zeros((1,) + spec.obs_shape, spec.obs_dtype)
  clip = dict(options=loss_options(config), max_grad_norm=config.max_grad_norm)
  state = learning.init_state(network, optimizer, key, dummy_obs)
  if not config.meta.enabled:
    update = learning.make_update_fn(network, optimizer, loss_hyperparams(config),
                                     axis_name=axis_name, **clip)
    return update, state
  m = config.meta
  parameterisation = make_parameterisation(config)
  meta_optimizer = meta_update.make_meta_optimizer(m.learning_rate, m.max_grad_norm, m.adam_eps)
  ring_batch = types.zeros_batch(make_spec(config, spec),
                                 global_batch_size(config, num_processes))
  meta_state = meta_update.init_meta_state(m, parameterisation, meta_optimizer,
                                           jax.random.fold_in(key, 1), state.params,
                                           state.opt_state, ring_batch)
  update = meta_update.make_meta_update_fn(
      network, optimizer, parameterisation, meta_optimizer, loss_hyperparams(config),
      outer_hyperparams(config), m, axis_name=axis_name, **clip)
  return update, state._replace(meta=meta_state)


def make_learner(config: Config, spec: envs.EnvSpec, devices=None) -> learning.Learner:
  from podmeta import learning
  update, state = make_update_and_state(config, spec)
  return learning.Learner(update, state, devices=devices)


def make_checkpointer(config: Config, run_dir: str, read_only: bool = False) -> Checkpointer:
  from podmeta.checkpointing import Checkpointer
  return Checkpointer(os.path.join(run_dir, "checkpoints"), config.checkpoints_to_keep,
                      read_only=read_only)


def make_tables(config: Config, spec: envs.EnvSpec):
  from podmeta import replay as replay_lib
  return replay_lib.make_tables(
      make_spec(config, spec), replay=config.replay, max_size=config.replay_max_size,
      samples_per_insert=config.samples_per_insert, min_size=config.min_replay_size,
      batch_size=config.batch_size)


# -- node constructors (run inside the node's thread or process) --------------

def host_run_dir(run_dir: str, process_id: int) -> str:
  """Process 0 of a pod (or a single host) writes to run_dir, the others under hosts/."""
  return run_dir if process_id == 0 else os.path.join(run_dir, "hosts", str(process_id))


def env_spec(config: Config) -> envs.EnvSpec:
  """The spec of config's env, made with its kwargs and wrappers."""
  return envs.env_spec(config.env_id, config.env_make_kwargs, config.env_wrappers,
                       config.env_backend)


def vector_env(config: Config, num_envs: int, seed: int):
  return envs.make_vector_env(config.env_id, num_envs, seed, config.env_wrappers,
                              config.env_backend, envpool_threads=config.envpool_threads,
                              **config.env_make_kwargs)


@core.names_failures("learner")
def build_learner_node(config: Config, run_dir: str, replay_client, stop_program=None,
                       pod: Optional[PodSpec] = None):
  """The learner node; with `pod`, one of the lockstepped learners of a pod (podmeta.pod).

  In local_mt the launcher has joined the pod already; in local_mp this
  node's process is the one that joins, before anything touches a JAX backend.
  """
  quiet_third_party_logs()
  from podmeta import pod as pod_lib
  if pod is not None and not pod_lib.joined():
    pod_lib.initialize(pod)
  from podmeta import replay as replay_lib
  from podmeta.learner_node import Budget, LearnerNode, PROGRESS_KEYS
  spec = env_spec(config)
  actor_devices, learner_devices = local_devices(config)
  # CPU inference: the learner pmaps over every device (of every host of a pod).
  learner = make_learner(config, spec, devices=learner_devices if actor_devices else None)
  address = replay_client.server_address
  process_id = jax.process_index() if pod is not None else 0
  host_dir = host_run_dir(run_dir, process_id)
  node = LearnerNode(
      learner=learner,
      make_prefetcher=lambda: replay_lib.Prefetcher(address, config.batch_size,
                                                    unrolls_per_item(config), learner.devices,
                                                    config.prefetch_size),
      # Checkpoints are written (and restored) by process 0 only.
      checkpointer=make_checkpointer(config, run_dir) if process_id == 0 else None,
      run_dir=host_dir,
      budget=Budget(config.max_env_steps, config.max_learner_steps, config.max_seconds),
      env_steps_per_batch=config.batch_size * config.unroll_length,
      logger=loggers.make_logger(host_dir, "learner", "env_steps",
                                 terminal_every=0.0, terminal_keys=PROGRESS_KEYS),
      log_every_seconds=config.log_every_seconds,
      checkpoint_every_seconds=config.checkpoint_every_seconds,
      stop_program=stop_program,
      replay_stats=lambda: replay_lib.table_stats(replay_client, unrolls_per_item(config)),
      expect_eval=config.eval_episodes > 0 and process_id == 0,
      host_sync=pod_lib.HostSync() if pod is not None else None,
      pod_watchdog=pod_lib.PodWatchdog() if pod is not None else None)
  if actor_devices:
    node.attach_actors(_actor_threads(config, learner, node, replay_client, host_dir,
                                      actor_devices))
  return node


def local_devices(config: Config):
  """(the actors' devices, the learner's devices) of this process, by config.inference."""
  devices = jax.local_devices()
  actor_ids, learner_ids = config_lib.device_assignment(
      config.inference, config.actor_device_ids, config.learner_device_ids, len(devices))
  return [devices[i] for i in actor_ids], [devices[i] for i in learner_ids]


def _actor_threads(config: Config, learner, node, replay_client, host_dir: str, devices):
  """inference="accelerator": the host's actors as threads of the learner's
  process, their policies spread over the acting devices (Sebulba)."""
  from podmeta import learning
  from podmeta.acting import ActorThreads
  source = learning.OnDeviceVariables(learner)
  return ActorThreads([
      build_actor(config, actor_id, host_dir, replay_client, node, variable_source=source,
                  device=devices[i % len(devices)])
      for i, actor_id in enumerate(_actor_ids(config, jax.process_index()))])


def _actor_ids(config: Config, process_id: int):
  # Unique across the pod: they seed the actors' envs.
  return [process_id * config.num_actors + i for i in range(config.num_actors)]


@core.names_failures("actor")
def build_actor(config: Config, actor_id: int, run_dir: Optional[str], replay_client, learner,
                variable_source=None, device=None):
  """An actor fed by `learner` (a courier client, or the LearnerNode itself),
  its parameters from `variable_source` (default: the learner), its policy on
  `device` (default: the CPU)."""
  quiet_third_party_logs()
  from podmeta import replay as replay_lib
  from podmeta.acting import Actor
  spec = env_spec(config)
  # A restarted actor process (podmeta.supervisor) must not replay the
  # episodes and action noise of the one it replaces.
  restarts = int(os.environ.get(node_entry.RESTARTS_ENV, "0"))
  seed = config.seed * 7919 + _ACTOR_SEED + actor_id + restarts * _RESTART_SEED_STRIDE
  env = vector_env(config, config.envs_per_actor, seed)
  report = learner.futures.report_actor if hasattr(learner, "futures") else learner.report_actor
  return Actor(
      env=env, network=make_network(config, spec), variable_source=variable_source or learner,
      writer=replay_lib.UnrollWriter(replay_client, make_spec(config, spec), config.envs_per_actor),
      key=jax.random.PRNGKey(seed), variable_update_period=config.variable_update_period,
      report=report, max_consecutive_env_errors=config.max_consecutive_env_errors,
      logger=loggers.make_logger(run_dir, f"actor_{actor_id}", "actor_env_steps"), device=device)


@core.names_failures("actor")
def build_actor_group(config: Config, actor_ids, run_dir: Optional[str], replay_client,
                      learner):
  """Several actors on threads of one node (config.actors_per_node)."""
  from podmeta.acting import ActorGroup
  return ActorGroup([build_actor(config, i, run_dir, replay_client, learner)
                     for i in actor_ids])


@core.names_failures("evaluator")
def build_evaluator(config: Config, run_dir: Optional[str], learner):
  quiet_third_party_logs()
  from podmeta.evaluation import Evaluator
  spec = env_spec(config)
  seed = config.seed * 7919 + _EVAL_SEED
  return Evaluator(
      env=vector_env(config, config.eval_episodes, seed),
      network=make_network(config, spec), variable_source=learner,
      key=jax.random.PRNGKey(seed), every_seconds=config.eval_every_seconds,
      logger=loggers.make_logger(run_dir, "evaluator", "learner_steps"),
      report=learner.report_eval)


def _lp_stop():
  import launchpad as lp
  lp.stop()


def make_program(config: Config, run_dir: str, pod: Optional[PodSpec] = None):
  """The Launchpad program: replay, learner, `num_actors` actors, evaluator.

  With `pod`, this host's part of a pod: its learner is pmapped over the
  whole pod, its actors feed its own replay and learner, and only process 0
  runs the evaluator and writes checkpoints. Its learner node joins the pod
  (`podmeta.pod.initialize`) unless this process has already.
  """
  import launchpad as lp
  from podmeta import pod as pod_lib
  spec = env_spec(config)
  process_id = pod_lib.process_index(pod) if pod is not None else 0
  host_dir = host_run_dir(run_dir, process_id)
  program = lp.Program("podmeta")
  with program.group("replay"):
    replay = program.add_node(lp.ReverbNode(functools.partial(make_tables, config, spec)))
  with program.group("learner"):
    learner = program.add_node(
        lp.CourierNode(build_learner_node, config, run_dir, replay, stop_program=_lp_stop,
                       pod=pod))
    # Bounded calls: a call left waiting on a learner that has shut down would
    # otherwise block its client's destructor, and so the process exit.
    learner.set_client_kwargs(call_timeout=datetime.timedelta(seconds=_CALL_TIMEOUT_SECONDS))
  # With inference on an accelerator the actors are threads of the learner's process.
  if config.inference == "cpu":
    ids = _actor_ids(config, process_id)
    with program.group("actor"):
      for first in range(0, len(ids), config.actors_per_node):
        group = ids[first:first + config.actors_per_node]
        if len(group) == 1:
          program.add_node(lp.CourierNode(build_actor, config, group[0], host_dir, replay,
                                          learner))
        else:
          program.add_node(lp.CourierNode(build_actor_group, config, group, host_dir, replay,
                                          learner))
  if config.eval_episodes > 0 and process_id == 0:
    with program.group("evaluator"):
      program.add_node(lp.CourierNode(build_evaluator, config, run_dir, learner))
  return program


# -- checks before anything starts ---------------------------------------------

def preflight(config: Config, run_dir: str, num_devices: Optional[int] = None,
              num_processes: Optional[int] = None) -> None:
  """Raises ValueError with a one-line message for any input that cannot work.

  `num_processes`: the pod's host count, where this process has not joined it.
  """
  envs.check_env_id(config.env_id, config.env_backend)
  spec = env_spec(config)
  # Raises for a device index this process lacks.
  _, learner_ids = config_lib.device_assignment(
      config.inference, config.actor_device_ids, config.learner_device_ids,
      num_devices or jax.local_device_count())
  n = len(learner_ids)
  chunks = config.meta.batch_chunks
  if config.batch_size % (n * chunks):
    raise ValueError(
        f"config field 'batch_size' ({config.batch_size}) is not divisible by the number of "
        f"learner devices ({n})" + (f" times the meta-update's sub-batches ({chunks})"
                                    if chunks > 1 else ""))
  _check_network_fits(config, spec)
  if os.path.exists(run_dir) and not os.path.isdir(run_dir):
    raise ValueError(f"run_dir {run_dir!r} exists and is not a directory")
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    _, learner_template = make_update_and_state(config, spec, num_processes=num_processes)
    # Read-only: the learner sets an unreadable checkpoint aside when it
    # restores; this check (on a pod, every host's) changes nothing.
    checkpointer = make_checkpointer(config, run_dir, read_only=True)
    from podmeta.checkpointing import CheckpointMismatch
    try:
      checkpointer.restore_latest(learner_template)  # raises CheckpointError (a ValueError)
    except CheckpointMismatch as e:
      changed = _changed_fields(config, run_dir)
      if not changed:
        raise
      raise ValueError(f"{e}; config fields changed since this run began "
                       f"(was -> now): {changed}") from e
    finally:
      checkpointer.close()


def _flat_fields(mapping, prefix=""):
  for key, value in mapping.items():
    if isinstance(value, dict):
      yield from _flat_fields(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _changed_fields(config: Config, run_dir: str, limit: int = 6) -> str:
  """The fields where `config` differs from run_dir's config.json, as `name (old -> new)`.

  A checkpoint that does not fit names an array path of the learner state;
  the user changed a field, and this names it. Lists and tuples compare
  equal (JSON has no tuples); "" if there is no readable config.json.
  """
  try:
    with open(os.path.join(run_dir, "config.json")) as f:
      before = dict(_flat_fields(json.load(f)))
  except (OSError, ValueError):
    return ""
  now = dict(_flat_fields(json.loads(json.dumps(dataclasses.asdict(config)))))
  changed = [f"{k} ({before.get(k)!r} -> {now.get(k)!r})"
             for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
  return ", ".join(changed[:limit]) + (f" and {len(changed) - limit} more"
                                       if len(changed) > limit else "")


def _check_network_fits(config: Config, spec: envs.EnvSpec) -> None:
  """Raises ValueError if the config's network cannot take the env's observations.

  Traced abstractly (no arrays are made), so a torso that does not fit (a conv
  torso on vector observations, images too small for its strides) is refused
  here rather than in the learner node after every node has started.
  """
  network = make_network(config, spec)
  dummy_obs = jax.ShapeDtypeStruct((1,) + tuple(spec.obs_shape), spec.obs_dtype)
  try:
    jax.eval_shape(network.init, jax.random.PRNGKey(0), dummy_obs)
  except Exception as e:  # pylint: disable=broad-except
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    raise ValueError(
        f"config field 'torso' ({config.torso!r}) cannot take {config.env_id}'s observations "
        f"of shape {tuple(spec.obs_shape)}: {lines[0][:200] if lines else type(e).__name__}"
    ) from e


def write_config(config: Config, run_dir: str) -> str:
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, "config.json")
  with open(path, "w") as f:
    json.dump(dataclasses.asdict(config), f, indent=2)
  return path
