"""Model-based control: learn a pendulum's dynamics online with a 5-member ensemble, and plan
with its mean and variance.

The system (written here, no downloads) is a pendulum to be held upright with a weak motor: the
torque of at most 2 cannot hold it past about 0.4 rad, so a policy must act before it falls. The
controller knows nothing of the physics. At every tick it plans by the cross-entropy method:
it samples action sequences, rolls each out through the ensemble (``fnn.ensemble_predict``, one
compiled call for all five members per step of the horizon), scores them by the predicted cost
plus a penalty on the ensemble's predictive variance (states the model does not know are
avoided), acts with the best sequence's first action, and replans. After each tick it steps the
ensemble once on a minibatch of the transitions seen so far, each member on its own bootstrap
rows (``fnn.train_step`` of stacked params with a (K, batch, ...) batch: one compiled call),
with a Gaussian negative log-likelihood: each member predicts the change of state and its own
noise (``loss="gaussian_nll"``).

    python examples/model_based_control.py              # add --quick for a short run
"""

import sys
import time

import numpy as np

import fastnn as fnn

DT, MAX_TORQUE, MAX_SPEED = 0.05, 2.0, 8.0
MEMBERS = 5


def physics(state, torque):
    """The pendulum one tick on (angle from upright, angular velocity): gravity pushes it over."""
    angle, speed = state
    speed = np.clip(speed + (15.0 * np.sin(angle) + 3.0 * torque) * DT, -MAX_SPEED, MAX_SPEED)
    return np.array([angle + speed * DT, speed])


def cost(angle, speed, torque):
    """Per tick: the angle from upright (wrapped), the speed and the effort."""
    wrapped = (angle + np.pi) % (2 * np.pi) - np.pi
    return wrapped ** 2 + 0.1 * speed ** 2 + 0.001 * torque ** 2


def features(angles, speeds, torques):
    """The model's inputs, on unit scales: cos, sin of the angle, speed and torque scaled."""
    return np.stack([np.cos(angles), np.sin(angles), speeds / MAX_SPEED, torques / MAX_TORQUE],
                    axis=-1).astype(np.float32)


class Planner:
    """The cross-entropy method over action sequences through the ensemble's mean, with a cost on
    its predictive variance."""

    def __init__(self, net, horizon, candidates, iterations, rng, caution=5.0):
        self.net, self.horizon, self.candidates, self.iterations = net, horizon, candidates, iterations
        self.rng, self.caution = rng, caution
        self.plan = np.zeros(horizon)

    def act(self, params, state):
        mean, spread = self.plan.copy(), np.full(self.horizon, MAX_TORQUE)
        for _ in range(self.iterations):
            actions = np.clip(mean + spread * self.rng.normal(size=(self.candidates, self.horizon)),
                              -MAX_TORQUE, MAX_TORQUE)
            scores = self.rollout(params, state, actions)
            elite = actions[np.argsort(scores)[: self.candidates // 10]]
            mean, spread = elite.mean(axis=0), elite.std(axis=0) + 0.05
        self.plan = np.append(mean[1:], 0.0)  # warm start for the next tick
        return float(mean[0])

    def rollout(self, params, state, actions):
        angles = np.full(self.candidates, state[0])
        speeds = np.full(self.candidates, state[1])
        total = np.zeros(self.candidates)
        for t in range(self.horizon):
            change, variance = fnn.ensemble_predict(self.net, params, features(angles, speeds, actions[:, t]),
                                                    head="gaussian")
            angles = angles + change[:, 0]
            speeds = np.clip(speeds + change[:, 1] * MAX_SPEED, -MAX_SPEED, MAX_SPEED)
            total += cost(angles, speeds, actions[:, t]) + self.caution * variance.sum(axis=1)
        return total


def episode(policy, rng, ticks, learn=None):
    """(total cost, transitions) of one episode from a random start near upright."""
    state = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5)])
    total, seen = 0.0, []
    for _ in range(ticks):
        torque = policy(state)
        after = physics(state, torque)
        total += cost(state[0], state[1], torque)
        seen.append((state, torque, after))
        if learn is not None:
            learn(seen[-1])
        state = after
    return total, seen


class Learner:
    """The dynamics ensemble and its online training: one stacked train_step per tick."""

    def __init__(self, rng, batch=64):
        self.net = fnn.mlp([4, 64, 64, 4], activation="silu")  # (d angle, d speed) means, log-variances
        self.params = fnn.init(self.net, seed=0, members=MEMBERS)
        self.opt = fnn.adam(lr=2e-3)
        self.state = fnn.init_state(self.opt, self.params)
        self.rng, self.batch = rng, batch
        self.x, self.y = [], []

    def add(self, transition):
        (angle, speed), torque, (angle_after, speed_after) = transition
        self.x.append(features(angle, speed, torque))
        self.y.append(np.array([angle_after - angle, (speed_after - speed) / MAX_SPEED], np.float32))
        self.train(steps=1)

    def train(self, steps):
        x, y = np.array(self.x), np.array(self.y)
        for _ in range(steps):
            rows = self.rng.integers(0, len(x), size=(MEMBERS, self.batch))  # each member's bootstrap rows
            self.params, self.state, losses = fnn.train_step(self.net, self.opt, self.params, self.state, x[rows],
                                                             y[rows], loss="gaussian_nll")
        return losses


def main(quick=False):
    rng = np.random.default_rng(0)
    ticks = 40 if quick else 100
    learner = Learner(rng)
    planner = Planner(learner.net, horizon=8 if quick else 15, candidates=100 if quick else 300,
                      iterations=2 if quick else 3, rng=rng)

    random_cost, seen = episode(lambda s: rng.uniform(-MAX_TORQUE, MAX_TORQUE), rng, ticks)
    for transition in seen:
        learner.add(transition)
    losses = learner.train(steps=200 if quick else 500)  # a head start on the random episode's data
    print(f"random torques: cost {random_cost:.1f} over {ticks} ticks; ensemble trained on "
          f"{len(seen)} transitions, members' NLL {np.round(losses, 2).tolist()}")
    costs = []
    for run in range(2 if quick else 5):
        start = time.perf_counter()
        total, _ = episode(lambda s: planner.act(learner.params, s), rng, ticks, learn=learner.add)
        costs.append(total)
        print(f"episode {run + 1}: cost {total:.1f}, {(time.perf_counter() - start) / ticks * 1e3:.1f} ms a tick "
              f"(plan + one ensemble step), {len(learner.x)} transitions")
    x, y = np.array(learner.x[-200:]), np.array(learner.y[-200:])
    mean, variance = fnn.ensemble_predict(learner.net, learner.params, x, head="gaussian")
    print(f"model on the last {len(x)} transitions: mean abs error {np.abs(mean - y).mean():.4f}, "
          f"predicted sd {np.sqrt(variance).mean():.4f}")
    print(f"planning with the ensemble: cost {costs[-1]:.1f} against {random_cost:.1f} with random torques")
    return random_cost, costs[-1]


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
