"""The trajectory schema through a real Reverb server; a real actor's unrolls."""

import threading
import time

import jax
import numpy as np
import pytest
import reverb

import envs
from podmeta import builder
from podmeta import replay as replay_lib
from podmeta.acting import Actor
from podmeta.acting import VariableClient
from podmeta.config import Config
from podmeta.types import Trajectory


@pytest.fixture
def server_factory():
  servers = []

  def make(config, spec):
    server = reverb.Server(builder.make_tables(config, spec), port=None)
    servers.append(server)
    return server, reverb.Client(f"localhost:{server.port}")

  yield make
  for s in servers:
    s.stop()


def _read(address, n_unrolls, batch_size, group):
  reader = replay_lib.BatchReader(address, batch_size, group, poll_ms=2000)
  out = []
  while len(out) * batch_size < n_unrolls:
    batch = reader.next()
    assert batch is not None, "replay ran dry"
    out.append(batch)
  return Trajectory(*[np.concatenate(x) for x in zip(*out)])


def _steps(rng, num_envs, n, first_version=0):
  return [Trajectory(
      observation=rng.normal(size=(num_envs, 3)).astype(np.float32),
      action=rng.integers(0, 5, num_envs).astype(np.int32),
      reward=rng.normal(size=num_envs).astype(np.float32),
      discount=np.ones(num_envs, np.float32), is_first=np.zeros(num_envs, bool),
      behaviour_logits=rng.normal(size=(num_envs, 5)).astype(np.float32),
      policy_version=np.full(num_envs, first_version + t, np.int32),
      core_state=np.zeros((num_envs, 1), np.float32)) for t in range(n)]


def test_a_batch_of_several_items_survives_slow_actors(server_factory):
  # Items of 2 unrolls, batches of 2 items. The second item arrives after the
  # reader's poll has timed out: the first must still be in the batch (a queue
  # table never hands it out again).
  config = Config(unroll_length=4, envs_per_actor=2, batch_size=4, replay_max_size=64)
  spec = envs.EnvSpec((3,), np.dtype(np.float32), 5)
  server, client = server_factory(config, spec)
  reader = replay_lib.BatchReader(f"localhost:{server.port}", 4, 2, poll_ms=300)
  rng = np.random.default_rng(1)
  written = []
  for first_version in (0, 100):
    writer = replay_lib.UnrollWriter(client, builder.make_spec(config, spec), 2)
    steps = _steps(rng, 2, 5, first_version)
    for step in steps:
      writer.append(step)
    writer.flush()
    writer.close()
    written.append(steps)
    if first_version == 0:
      assert reader.next() is None  # half a batch: the poll times out
  batch = reader.next()
  assert batch is not None and batch.observation.shape == (4, 5, 3)
  for item, steps in enumerate(written):
    for e in range(2):
      expected = np.stack([s.observation[e] for s in steps])
      np.testing.assert_array_equal(batch.observation[2 * item + e], expected)
  assert client.server_info()[replay_lib.TABLE].current_size == 0


def test_schema_round_trips_with_one_step_overlap(server_factory):
  # 4 envs in items of 2 unrolls (gcd of envs_per_actor and batch_size).
  config = Config(unroll_length=4, envs_per_actor=4, batch_size=2, replay_max_size=64)
  assert builder.unrolls_per_item(config) == 2
  spec = envs.EnvSpec((3,), np.dtype(np.float32), 5)
  server, client = server_factory(config, spec)
  num_envs, steps = 4, 9  # 9 vector steps -> 2 unrolls of T+1 = 5 per env
  writer = replay_lib.UnrollWriter(client, builder.make_spec(config, spec), num_envs)
  rng = np.random.default_rng(0)
  written = []
  for t in range(steps):
    step = Trajectory(
        observation=rng.normal(size=(num_envs, 3)).astype(np.float32),
        action=rng.integers(0, 5, num_envs).astype(np.int32),
        reward=rng.normal(size=num_envs).astype(np.float32),
        discount=(rng.random(num_envs) < 0.8).astype(np.float32),
        is_first=rng.random(num_envs) < 0.3,
        behaviour_logits=rng.normal(size=(num_envs, 5)).astype(np.float32),
        policy_version=np.full(num_envs, t, np.int32),
        core_state=rng.normal(size=(num_envs, 1)).astype(np.float32))
    written.append(step)
    writer.append(step)
  writer.flush()
  assert client.server_info()[replay_lib.TABLE].current_size == 2 * num_envs // 2

  items = _read(f"localhost:{server.port}", 2 * num_envs, batch_size=4, group=2)
  assert items.observation.shape == (2 * num_envs, 5, 3)
  assert items.behaviour_logits.shape == (2 * num_envs, 5, 5)
  # FIFO: unroll 0 of envs 0..3, then unroll 1; unroll k covers steps 4k..4k+4.
  for u in range(2):
    for e in range(num_envs):
      got = jax.tree.map(lambda x: x[u * num_envs + e], items)
      for field in Trajectory._fields:
        # core_state is stored once per unroll: the value at its first step.
        steps = 1 if field == "core_state" else 5
        expected = np.stack([getattr(written[4 * u + t], field)[e] for t in range(steps)])
        np.testing.assert_array_equal(getattr(got, field), expected, err_msg=field)
        assert getattr(got, field).dtype == expected.dtype
  writer.close()


def test_actor_writes_consistent_unrolls(server_factory):
  config = Config(unroll_length=10, envs_per_actor=4, batch_size=4, replay_max_size=256)
  spec = envs.env_spec("CartPole-v1")
  server, client = server_factory(config, spec)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  reports = []
  env = envs.make_vector_env(config.env_id, config.envs_per_actor, seed=1)
  actor = Actor(
      env=env,
      network=builder.make_network(config, spec), variable_source=learner,
      writer=replay_lib.UnrollWriter(client, builder.make_spec(config, spec), 4),
      key=jax.random.PRNGKey(0), variable_update_period=5,
      report=lambda steps, returns, lengths, errors: reports.append((steps, returns, lengths)),
      report_every_seconds=1e9, stop_event=threading.Event())
  vector_steps = 201
  assert not env.closed
  env_steps = actor.run(max_steps=vector_steps)
  assert env_steps == vector_steps * 4
  assert env.closed  # a run is one-shot: it closes what it was given
  n_unrolls = (vector_steps - 1) // 10 * 4
  assert client.server_info()[replay_lib.TABLE].current_size == n_unrolls // 4

  items = _read(f"localhost:{server.port}", n_unrolls, batch_size=4, group=4)
  # Episode structure: a terminal observation (discount 0) is followed by a
  # reset observation (is_first) whose reward is 0; the first step is first.
  term = items.discount[:, :-1] == 0.0
  np.testing.assert_array_equal(items.is_first[:, 1:][term], True)
  np.testing.assert_array_equal(items.reward[items.is_first], 0.0)
  assert items.is_first[0, 0]
  live = ~items.is_first
  np.testing.assert_array_equal(items.reward[live & (np.arange(11) > 0)], 1.0)
  # Behaviour logits are the network's at the stored observations.
  _, params = learner.get_variables()
  logits, _ = builder.make_network(config, spec).apply(params, items.observation)
  np.testing.assert_allclose(items.behaviour_logits, np.asarray(logits), atol=1e-5)
  # Reported episodes: CartPole pays 1 per step, so return == length.
  (steps, returns, lengths), = reports
  assert steps == env_steps and returns and returns == [float(l) for l in lengths]
  assert all(r >= 8 for r in returns)  # CartPole episodes last at least 8 steps


def test_a_full_queue_holds_the_actor_back_and_a_stop_still_ends_it(server_factory):
  """Back-pressure: with nobody reading, the actor stops acting once the table
  is full and one more unroll is in flight (it keeps one unroll in flight
  while acting the next, not more), and a stop request ends it while blocked."""
  config = Config(unroll_length=10, envs_per_actor=4, batch_size=4, replay_max_size=8,
                  min_replay_size=4)
  spec = envs.env_spec("CartPole-v1")
  server, client = server_factory(config, spec)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  stop = threading.Event()
  actor = Actor(
      env=envs.make_vector_env(config.env_id, config.envs_per_actor, seed=1),
      network=builder.make_network(config, spec), variable_source=learner,
      writer=replay_lib.UnrollWriter(client, builder.make_spec(config, spec), 4),
      key=jax.random.PRNGKey(0), variable_update_period=5, report_every_seconds=1e9,
      stop_event=stop)
  result = {}
  thread = threading.Thread(target=lambda: result.update(steps=actor.run()))
  thread.start()
  deadline = time.monotonic() + 60
  while client.server_info()[replay_lib.TABLE].current_size < 2 and time.monotonic() < deadline:
    time.sleep(0.1)
  time.sleep(2.0)  # time to run ahead, were it not held back
  assert thread.is_alive()
  assert client.server_info()[replay_lib.TABLE].current_size == 2  # 8 unrolls in items of 4
  stop.set()
  thread.join(timeout=10)
  assert not thread.is_alive()
  # Two unrolls per env in the table, one in flight, the next acted: 4 x 10 + 1 steps.
  assert result["steps"] <= (4 * 10 + 1) * 4


def test_a_gaussian_actor_writes_float_actions_the_env_sees_clipped_and_rescaled(server_factory):
  """Pendulum: the stored action is the Gaussian sample; the env applies 2 * clip(a, -1, 1)."""
  config = Config(env_id="Pendulum-v1", unroll_length=10, envs_per_actor=4, batch_size=4,
                  replay_max_size=256, gaussian_init_std=2.0)
  spec = envs.env_spec(config.env_id)
  assert spec == envs.EnvSpec((3,), np.dtype(np.float32), 1, continuous=True)
  server, client = server_factory(config, spec)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  actor = Actor(
      env=envs.make_vector_env(config.env_id, 4, seed=1),
      network=builder.make_network(config, spec), variable_source=learner,
      writer=replay_lib.UnrollWriter(client, builder.make_spec(config, spec), 4),
      key=jax.random.PRNGKey(0), variable_update_period=5, report_every_seconds=1e9,
      stop_event=threading.Event())
  actor.run(max_steps=41)
  items = _read(f"localhost:{server.port}", 16, batch_size=4, group=4)
  assert items.action.shape == (16, 11, 1) and items.action.dtype == np.float32
  assert items.behaviour_logits.shape == (16, 11, 2)
  # With std 2 most samples fall outside [-1, 1]: the clip is exercised.
  assert np.mean(np.abs(items.action) > 1.0) > 0.3
  _, params = learner.get_variables()
  logits, _ = builder.make_network(config, spec).apply(params, items.observation)
  np.testing.assert_allclose(items.behaviour_logits, np.asarray(logits), atol=1e-5)
  # Pendulum's reward for x_t, a_t: -(theta^2 + 0.1 thetadot^2 + 0.001 u^2).
  cos, sin, thdot = np.moveaxis(items.observation[:, :-1].astype(np.float64), -1, 0)
  u = 2.0 * np.clip(items.action[:, :-1, 0], -1.0, 1.0)
  expected = -(np.arctan2(sin, cos) ** 2 + 0.1 * thdot ** 2 + 0.001 * u ** 2)
  live = ~items.is_first[:, 1:]
  np.testing.assert_allclose(items.reward[:, 1:][live], expected[live], rtol=1e-4, atol=1e-4)


def test_an_lstm_actor_stores_the_state_the_learner_unrolls_from(server_factory):
  """Each unroll's core_state is the actor's state before its first step: unrolling the
  network from it over the stored observations (with resets) gives back every stored
  behaviour logit, across unroll boundaries and episode ends."""
  config = Config(env_id="podmeta/CartPoleNoVelocity-v1", unroll_length=10, envs_per_actor=4,
                  batch_size=4, replay_max_size=256, core="lstm", core_size=8)
  spec = envs.env_spec(config.env_id)
  server, client = server_factory(config, spec)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  network = builder.make_network(config, spec)
  actor = Actor(
      env=envs.make_vector_env(config.env_id, 4, seed=2), network=network,
      variable_source=learner,
      writer=replay_lib.UnrollWriter(client, builder.make_spec(config, spec), 4),
      key=jax.random.PRNGKey(0), variable_update_period=5, report_every_seconds=1e9,
      stop_event=threading.Event())
  actor.run(max_steps=81)  # 8 unrolls per env; CartPole episodes end within them
  items = _read(f"localhost:{server.port}", 32, batch_size=4, group=4)
  assert items.core_state.shape == (32, 1, network.state_size)
  assert items.is_first[:, 1:].any()
  np.testing.assert_array_equal(items.core_state[:4], 0.0)  # the first unrolls start fresh
  assert np.abs(items.core_state[4:]).max() > 1e-3
  _, params = learner.get_variables()
  logits, _, _ = network.unroll(params, items.observation, items.is_first,
                                items.core_state[:, 0])
  np.testing.assert_allclose(items.behaviour_logits, np.asarray(logits), atol=1e-5)
  # The learner steps on it, the parameters change and the loss is finite.
  metrics = learner.step(jax.tree.map(lambda x: x[None, :4], items))  # [devices, B, ...]
  assert np.all(np.isfinite(np.asarray(metrics["loss"])))
  assert learner.get_variables()[0] == 1


def _faulty_actor(server_factory, error_rate, reports):
  config = Config(unroll_length=10, envs_per_actor=4, batch_size=4, replay_max_size=256)
  spec = envs.env_spec("CartPole-v1")
  server, client = server_factory(config, spec)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  actor = Actor(
      env=envs.make_vector_env(envs.faulty.FAULTY_ID, 4, seed=3, error_rate=error_rate),
      network=builder.make_network(config, spec), variable_source=learner,
      writer=replay_lib.UnrollWriter(client, builder.make_spec(config, spec), 4),
      key=jax.random.PRNGKey(0), variable_update_period=5,
      report=lambda steps, returns, lengths, errors: reports.append((steps, returns, errors)),
      report_every_seconds=1e9, stop_event=threading.Event(), max_consecutive_env_errors=3)
  return actor, server, client


def test_an_env_that_raises_is_reset_and_counted(server_factory):
  reports = []
  actor, server, client = _faulty_actor(server_factory, 0.01, reports)
  vector_steps = 401
  assert actor.run(max_steps=vector_steps) == vector_steps * 4  # failed steps are not steps
  (steps, returns, errors), = reports
  # 4 envs at 1% per env step: some vector steps failed, never 3 in a row here.
  assert steps == vector_steps * 4 and 3 <= errors <= 60, errors
  # Episodes cut by a failure are not reported: CartPole returns stay >= 8.
  assert returns and all(r >= 8 for r in returns)
  n_unrolls = client.server_info()[replay_lib.TABLE].current_size * 4
  items = _read(f"localhost:{server.port}", n_unrolls, batch_size=4, group=4)
  # After a failure every env starts afresh: more first steps than terminals
  # alone explain, each with reward 0.
  term = items.discount[:, :-1] == 0.0
  assert items.is_first[:, 1:].sum() > term.sum()
  np.testing.assert_array_equal(items.reward[items.is_first], 0.0)


def test_an_env_that_keeps_failing_ends_the_actor_with_its_error(server_factory):
  actor, _, _ = _faulty_actor(server_factory, 1.0, [])
  with pytest.raises(RuntimeError, match="failed 3 times in a row") as info:
    actor.run(max_steps=100)
  assert isinstance(info.value.__cause__, envs.faulty.EnvCrash)
  assert info.value.podmeta_node == "actor"


class _CountingSource:
  """A local VariableSource whose version the test moves; counts what it hands out."""

  def __init__(self):
    self.version, self.copies = 0, 0

  def get_variables(self):
    self.copies += 1
    return self.version, {"w": np.full(3, float(self.version), np.float32)}

  def get_variables_if_changed(self, version):
    return None if version == self.version else self.get_variables()


def test_the_variable_client_polls_and_takes_params_only_when_they_changed():
  source = _CountingSource()
  client = VariableClient(source, update_period=2)
  assert (client.version, client.params, source.copies) == (None, None, 0)
  assert client.wait_for_first()
  assert (client.version, source.copies) == (0, 1)
  held = client.params
  for _ in range(10):  # five polls of an unchanged source: nothing copied or replaced
    client.update()
  assert source.copies == 1 and client.params is held
  source.version = 4
  client.update()
  client.update()
  assert client.version == 4 and source.copies == 2
  np.testing.assert_array_equal(np.asarray(client.params["w"]), 4.0)
  # The real learner answers the same way: None while its step count is the version.
  config = Config(envs_per_actor=4, batch_size=4)
  spec = builder.env_spec(config)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  assert learner.get_variables_if_changed(0) is None
  assert learner.get_variables_if_changed(-1)[0] == 0


class _SilentLearner:
  """A learner whose server never answers; a stop request comes on the second try."""

  def __init__(self, stop: threading.Event):
    self.calls, self._stop = 0, stop

  def get_variables(self):
    self.calls += 1
    if self.calls == 2:
      self._stop.set()
    raise ConnectionError("learner not up yet")


def test_an_actor_stopped_before_the_learner_answers_ends_without_acting(server_factory):
  """Ctrl-C during start-up: the actor waits for its first parameters in `run`
  (not in its constructor) and sees the stop request while it waits."""
  config = Config(unroll_length=10, envs_per_actor=4, batch_size=4)
  spec = envs.env_spec("CartPole-v1")
  _, client = server_factory(config, spec)
  stop = threading.Event()
  learner = _SilentLearner(stop)
  actor = Actor(
      env=envs.make_vector_env(config.env_id, config.envs_per_actor, seed=1),
      network=builder.make_network(config, spec), variable_source=learner,
      writer=replay_lib.UnrollWriter(client, builder.make_spec(config, spec), 4),
      key=jax.random.PRNGKey(0), variable_update_period=5, stop_event=stop)
  assert learner.calls == 0  # building it asked for nothing
  assert actor.run(max_steps=10) == 0
  assert learner.calls == 2
  assert client.server_info()[replay_lib.TABLE].current_size == 0


class _RecordingLogger:

  def __init__(self):
    self.rows, self.closed = [], False

  def write(self, row):
    self.rows.append(row)

  def close(self):
    self.closed = True


def test_the_evaluator_reports_greedy_returns_and_closes_its_env_and_logger():
  from podmeta.evaluation import Evaluator
  config = Config(eval_episodes=2)
  spec = envs.env_spec("CartPole-v1")
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  stop, reported = threading.Event(), []

  def report(version, mean):
    reported.append((version, mean))
    stop.set()  # one evaluation is enough here
    return 1234

  env = envs.make_vector_env(config.env_id, config.eval_episodes, seed=5)
  logger = _RecordingLogger()
  evaluator = Evaluator(env=env, network=builder.make_network(config, spec),
                        variable_source=learner, key=jax.random.PRNGKey(0), every_seconds=0.0,
                        logger=logger, report=report, stop_event=stop)
  evaluator.run()
  (version, mean), = reported
  # The greedy policy's episodes on the same env seed, run here directly.
  from podmeta.acting import make_policy
  from podmeta.evaluation import run_episodes
  network = builder.make_network(config, spec)
  reference = run_episodes(envs.make_vector_env(config.env_id, config.eval_episodes, seed=5),
                           network, make_policy(network, greedy=True),
                           learner.get_variables()[1], jax.random.PRNGKey(1))
  assert version == 0 and mean == float(np.mean(reference)) >= 8.0
  row, = logger.rows
  assert (row["learner_steps"], row["eval_return"], row["eval_env_steps"]) == (0, mean, 1234)
  assert row["eval_episodes"] == 2
  assert env.closed and logger.closed
