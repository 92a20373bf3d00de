"""Stochastic policies over gymnasium action spaces: a Keras MLP plus the distribution math.

- ``CategoricalPolicy`` for ``Discrete(n)``: the MLP gives ``n`` logits.
- ``GaussianPolicy`` for ``Box`` of any shape (flattened): a diagonal Gaussian over an
  unbounded ``u`` with a learned, state-independent log standard deviation. Dimensions with
  finite bounds are squashed into them, ``a = mid + half * tanh(u)``, and the log-probability
  includes the change of variables, ``log p(a) = log N(u; mu, sigma) - sum log(half * (1 -
  tanh(u)^2))``, so it is the density of the action the environment receives (no clipping,
  whose probability mass at the bounds a Gaussian log-density would ignore). Unbounded
  dimensions pass ``u`` through.

The *raw action* is what the policy samples and the update differentiates: the integer
action for ``Discrete``, the pre-squash ``u`` for ``Box`` (inverting ``tanh`` at the bounds
would be unstable). ``to_env`` maps raw actions to what ``env.step`` takes.

Acting runs once per environment step on a few observations, so its cost is the cost of a
call, not of the arithmetic: ``HostForward`` runs the network's forward pass in NumPy,
where calling the same network compiled by TensorFlow from Python costs several times more
(``benchmarks/bench_reinforce.py`` times the whole agent). It reads the Keras weights when
``sync`` is called, and the policies sample from its output with a NumPy generator
(``host_sample``). Learning always differentiates the Keras model.

References:
  Haarnoja, Zhou, Abbeel, Levine. Soft Actor-Critic. ICML 2018. arXiv:1801.01290 (appendix C:
  the tanh change of variables).
"""

from __future__ import annotations

import math

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf


def observation_size(space: gym.Space) -> int:
    """Length of the flat float vector the policy sees for an observation from ``space``."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise ValueError(f"observation space must be Box or Discrete. Received: {space}")


def preprocess(space: gym.Space, obs) -> np.ndarray:
    """A batch of observations as float32 ``[batch, observation_size]`` (one-hot if Discrete)."""
    obs = np.asarray(obs)
    if isinstance(space, gym.spaces.Discrete):
        return np.eye(space.n, dtype=np.float32)[obs.reshape(-1) - space.start]
    return obs.reshape(obs.shape[0], -1).astype(np.float32)


def mlp(input_size: int, hidden_sizes, activation: str, head: keras.layers.Layer, name: str):
    layers = [keras.Input((input_size,))]
    layers += [keras.layers.Dense(size, activation=activation) for size in hidden_sizes]
    return keras.Sequential(layers + [head], name=name)


@keras.saving.register_keras_serializable(package="gradlab")
class GaussianHead(keras.layers.Layer):
    """Outputs ``concat([mean, log_std])``; ``log_std`` is a learned vector, not a function of
    the state (the usual choice for policy-gradient methods)."""

    def __init__(self, units: int, init_log_std: float = -0.5, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.init_log_std = float(init_log_std)
        # A small initial mean keeps early actions near the middle of the bounds.
        self.mean = keras.layers.Dense(units,
                                       kernel_initializer=keras.initializers.Orthogonal(0.01))

    def build(self, input_shape):
        self.mean.build(input_shape)
        self.log_std = self.add_weight(
            shape=(self.units,), initializer=keras.initializers.Constant(self.init_log_std),
            name="log_std")

    def call(self, inputs):
        mean = self.mean(inputs)
        return tf.concat([mean, tf.broadcast_to(self.log_std, tf.shape(mean))], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "init_log_std": self.init_log_std}


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning for large |x|


# Activations HostForward computes in NumPy; any other Keras activation is applied through
# Keras (correct, one eager call slower).
HOST_ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": _sigmoid,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "softplus": lambda x: np.logaddexp(x, 0.0),
    "silu": lambda x: x * _sigmoid(x),
}


class HostForward:
    """The forward pass of a network built by ``mlp`` (Dense layers, then a Dense or
    ``GaussianHead`` output), computed in NumPy from a copy of its weights.

    ``sync()`` copies the weights; call it after they change (``Reinforce`` does before every
    batch it collects and every ``act``). ``forward(obs)`` then equals ``model(obs)`` up to
    float32 rounding.

    Args:
      model: a ``keras.Sequential`` from ``mlp``.
    """

    def __init__(self, model: keras.Sequential):
        self.model = model
        self.activations, self._variables = [], []
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dense) and layer.use_bias:
                name = getattr(layer.activation, "__name__", None)
                self.activations.append(HOST_ACTIVATIONS.get(name) or _through_keras(layer))
                self._variables += [layer.kernel, layer.bias]
            elif isinstance(layer, GaussianHead) and layer is model.layers[-1]:
                self._variables += [layer.mean.kernel, layer.mean.bias, layer.log_std]
            else:
                raise ValueError(f"model must hold Dense layers with biases and a Dense or "
                                 f"GaussianHead output. Received: a {type(layer).__name__} "
                                 f"layer ({layer.name!r})")
        self.weights = None
        self.sync()

    def sync(self):
        """Copies the model's current weights."""
        self.weights = [np.asarray(v) for v in self._variables]

    def forward(self, obs: np.ndarray) -> np.ndarray:
        """``model(obs)`` for a float32 batch ``[batch, input_size]``, as a NumPy array."""
        h, w = obs, self.weights
        for i, activation in enumerate(self.activations):
            h = activation(h @ w[2 * i] + w[2 * i + 1])
        if len(w) > 2 * len(self.activations):  # GaussianHead: mean kernel, bias, log_std
            kernel, bias, log_std = w[-3:]
            mean = h @ kernel + bias
            h = np.concatenate([mean, np.broadcast_to(log_std, mean.shape)], axis=-1)
        return h


def _through_keras(layer):
    return lambda x: np.asarray(layer.activation(x))


class CategoricalPolicy:
    """Softmax policy over ``Discrete(n)`` actions."""

    raw_dtype = tf.int32

    def __init__(self, action_space: gym.spaces.Discrete, model: keras.Model):
        self.action_space = action_space
        self.model = model
        self.raw_shape = ()

    @classmethod
    def build(cls, obs_size, action_space, hidden_sizes, activation, **_):
        head = keras.layers.Dense(int(action_space.n),
                                  kernel_initializer=keras.initializers.Orthogonal(0.01))
        return cls(action_space, mlp(obs_size, hidden_sizes, activation, head, "policy"))

    def sample(self, out, generator: tf.random.Generator):
        # Gumbel-max: argmax(logits + Gumbel noise) is a categorical sample, and a
        # tf.random.Generator keeps it reproducible from the seed.
        u = generator.uniform(tf.shape(out), minval=1e-20, maxval=1.0, dtype=out.dtype)
        return tf.argmax(out - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)

    def host_sample(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``sample`` on ``HostForward``'s output: Gumbel-max, with float64 noise."""
        return (out + rng.gumbel(size=out.shape)).argmax(axis=-1).astype(np.int32)

    def host_mode(self, out: np.ndarray) -> np.ndarray:
        return out.argmax(axis=-1).astype(np.int32)

    def greedy(self, out):
        """The most likely action, as ``env.step`` takes it, in TensorFlow: ``[batch]`` int64
        (e.g. a trained agent acting inside another agent's compiled function)."""
        return tf.argmax(out, axis=-1) + int(self.action_space.start)

    def host_entropy(self, out: np.ndarray) -> np.ndarray:
        """``entropy`` on ``HostForward``'s output, in float64."""
        logits = out.astype(np.float64)
        logp = logits - logits.max(axis=-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))
        return -(np.exp(logp) * np.where(np.isneginf(logp), 0.0, logp)).sum(axis=-1)

    def log_prob(self, out, raw_actions):
        return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=raw_actions, logits=out)

    def entropy(self, out):
        logp = tf.nn.log_softmax(out)
        return -tf.reduce_sum(tf.exp(logp) * logp, axis=-1)

    def kl(self, out_p, out_q):
        """``KL(p || q) = sum_a p(a) (log p(a) - log q(a))`` per state, between the softmax
        policies of two outputs (logits), ``[batch]``. Zero for equal logits, never negative
        (up to rounding)."""
        logp, logq = tf.nn.log_softmax(out_p), tf.nn.log_softmax(out_q)
        return tf.reduce_sum(tf.exp(logp) * (logp - logq), axis=-1)

    def imitation_loss(self, out, actions):
        """Mean cross-entropy of the logits ``out`` against ``actions`` as ``env.step`` takes
        them (behaviour cloning: minimized, the greedy action becomes ``actions``)."""
        labels = tf.cast(actions, tf.int32) - int(self.action_space.start)
        return -tf.reduce_mean(self.log_prob(out, labels))

    def to_env(self, raw_actions: np.ndarray) -> np.ndarray:
        return raw_actions.astype(np.int64) + int(self.action_space.start)


class GaussianPolicy:
    """Diagonal Gaussian policy over ``Box`` actions, tanh-squashed into finite bounds."""

    raw_dtype = tf.float32

    def __init__(self, action_space: gym.spaces.Box, model: keras.Model):
        self.action_space = action_space
        self.model = model
        low = np.asarray(action_space.low, np.float64).reshape(-1)
        high = np.asarray(action_space.high, np.float64).reshape(-1)
        self.bounded = np.isfinite(low) & np.isfinite(high)
        self.mid = np.zeros_like(low)
        self.half = np.ones_like(low)
        self.mid[self.bounded] = (high[self.bounded] + low[self.bounded]) / 2
        self.half[self.bounded] = (high[self.bounded] - low[self.bounded]) / 2
        self._bounded = tf.constant(self.bounded)
        self._log_half = tf.constant(np.log(self.half), tf.float32)
        self.size = low.size
        # Raw actions are flat, [batch, size], whatever the Box's shape (a (2, 2) Box is four
        # Gaussians); to_env gives them the environment's shape.
        self.raw_shape = (self.size,)

    @classmethod
    def build(cls, obs_size, action_space, hidden_sizes, activation, init_log_std=-0.5):
        head = GaussianHead(int(np.prod(action_space.shape)), init_log_std)
        return cls(action_space, mlp(obs_size, hidden_sizes, activation, head, "policy"))

    def _split(self, out):
        return out[:, :self.size], out[:, self.size:]

    def sample(self, out, generator: tf.random.Generator):
        mean, log_std = self._split(out)
        return mean + tf.exp(log_std) * generator.normal(tf.shape(mean), dtype=out.dtype)

    def host_sample(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``sample`` on ``HostForward``'s output."""
        mean, log_std = out[:, :self.size], out[:, self.size:]
        return (mean + np.exp(log_std) * rng.standard_normal(mean.shape, np.float32)
                ).astype(np.float32)

    def host_mode(self, out: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(out[:, :self.size])

    def host_entropy(self, out: np.ndarray) -> np.ndarray:
        """``entropy`` on ``HostForward``'s output, in float64."""
        log_std = out[:, self.size:].astype(np.float64)
        return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(axis=-1)

    def log_prob(self, out, raw_actions):
        mean, log_std = self._split(out)
        z = (raw_actions - mean) * tf.exp(-log_std)
        gaussian = -0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
        log_dtanh = 2.0 * (math.log(2.0) - raw_actions - tf.nn.softplus(-2.0 * raw_actions))
        log_jacobian = tf.where(self._bounded, self._log_half + log_dtanh, 0.0)
        return tf.reduce_sum(gaussian - log_jacobian, axis=-1)

    def entropy(self, out):
        """Entropy of the Gaussian over ``u`` (the squashed one has no closed form)."""
        _, log_std = self._split(out)
        return tf.reduce_sum(log_std + 0.5 * math.log(2 * math.pi * math.e), axis=-1)

    def kl(self, out_p, out_q):
        """``KL(p || q)`` per state, ``[batch]``, between the diagonal Gaussians over the
        pre-squash ``u`` of two outputs:

            sum_i log(sigma_q / sigma_p) + (sigma_p^2 + (mu_p - mu_q)^2) / (2 sigma_q^2) - 1/2

        The tanh squash is the same invertible map for both, so this is also the KL between
        the squashed action distributions. With the state-independent ``log_std`` of
        ``GaussianHead`` the log terms cancel, leaving ``sum_i (mu_p - mu_q)^2 / (2 sigma^2)``.
        """
        mean_p, log_std_p = self._split(out_p)
        mean_q, log_std_q = self._split(out_q)
        ratio = tf.exp(2.0 * (log_std_p - log_std_q))  # sigma_p^2 / sigma_q^2
        shift = tf.square(mean_p - mean_q) * tf.exp(-2.0 * log_std_q)
        return tf.reduce_sum(log_std_q - log_std_p + 0.5 * (ratio + shift - 1.0), axis=-1)

    def imitation_loss(self, out, actions):
        """Mean squared distance between the greedy action (the squashed mean) and
        ``actions`` as ``env.step`` takes them, per unit of each bounded dimension's
        half-width (behaviour cloning). Targets at a bound pull the mean to infinity, where
        tanh's gradient vanishes: keep them a little inside."""
        mode = self.greedy(out)
        target = tf.reshape(tf.cast(actions, tf.float32), tf.shape(mode))
        half = tf.constant(self.half, tf.float32)
        return tf.reduce_mean(tf.reduce_sum(tf.square((mode - target) / half), axis=-1))

    def greedy(self, out):
        """The most likely action (the squashed mean), as ``env.step`` takes it but flat, in
        TensorFlow: ``[batch, size]`` float32."""
        mean, _ = self._split(out)
        mid, half = (tf.constant(v, tf.float32) for v in (self.mid, self.half))
        return tf.where(self._bounded, mid + half * tf.tanh(mean), mean)

    def to_env(self, raw_actions: np.ndarray) -> np.ndarray:
        u = raw_actions.reshape(raw_actions.shape[0], -1).astype(np.float64)
        a = np.where(self.bounded, self.mid + self.half * np.tanh(u), u)
        # float32 rounding of tanh near +-1 may step a hair outside the box.
        a = np.clip(a, self.action_space.low.reshape(-1), self.action_space.high.reshape(-1))
        return a.reshape((-1, *self.action_space.shape)).astype(self.action_space.dtype)


def policy_class(action_space: gym.Space):
    """The policy class for ``action_space``, or a ``ValueError`` naming what is supported."""
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalPolicy
    if isinstance(action_space, gym.spaces.Box) and np.issubdtype(action_space.dtype, np.floating):
        return GaussianPolicy
    raise ValueError("action space must be Discrete or a floating-point Box. "
                     f"Received: {action_space}")
