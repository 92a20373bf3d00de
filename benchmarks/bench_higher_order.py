"""Times gradlab's second-order helpers against their alternatives, side by side in one run.

1. Hessian-vector product over gradient, on a 784-256-256-10 tanh MLP (269,322 parameters)
   with a fixed random batch of 256 and a cross-entropy loss:
   (a) the gradient, ``lab.higher_order.value_and_grad``;
   (b) ``lab.higher_order.hvp``, forward-over-back (Pearlmutter 1994);
   (c) back-over-back, the gradient of ``<grad, v>`` through two nested ``GradientTape``s.
   Reports HVP/gradient ratios and checks that (b) and (c) agree.
2. Dense Hessian on a 20-32-10 tanh MLP (1,002 parameters): ``lab.higher_order.hessian``
   (a Jacobian of the gradient vectorized with pfor) against n HVPs with the basis vectors,
   both as ``tf.map_fn`` in one ``tf.function`` and as a Python loop over a compiled HVP.
   Checks that the Hessians agree and reports the time ratios.

Every variant is a warmed-up ``tf.function``; times are medians over ``--repeats`` timeit
repeats. Timings are printed, never asserted. Run from the repository root::

    python benchmarks/bench_higher_order.py            # full run, about 30 s on 2 cores
    python benchmarks/bench_higher_order.py --quick    # smoke test, a few seconds

References:
  Pearlmutter. Fast exact multiplication by the Hessian. Neural Computation 1994.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import timeit

# Quiets TF's C++ logging; TF 2.21 still writes a few absl start-up lines to stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402  (must follow TF_CPP_MIN_LOG_LEVEL)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lab import higher_order  # noqa: E402
from lab.variables import as_list, flat_size, flatten  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30,
                        help="timed repeats per variant (the median is reported)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 3 repeats and a smaller Hessian model")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of parameters and data")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1. Received: --repeats={args.repeats}")
    if args.quick:
        args.repeats = min(args.repeats, 3)
    return args


def median_ms(fns: dict, repeats: int, number: int = 1, warmup: int = 2) -> dict:
    """Median wall time of one call of each ``fns[name]()``, in milliseconds.

    Repeats are interleaved across the variants so slow drift (other processes, CPU clocks)
    hits all of them alike. Eager execution on CPU is synchronous, so a returned tensor is
    already computed and no ``.numpy()`` (an extra copy) is needed inside the timed loop.
    """
    for fn in fns.values():
        for _ in range(warmup):  # the first call traces; the next settle caches and threads
            fn()
    timers = {name: timeit.Timer(fn) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, timer in timers.items():
            times[name].append(timer.timeit(number) / number * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def mlp(sizes: list[int]) -> keras.Model:
    """A tanh MLP with linear logits; ``sizes`` lists input, hidden and output widths."""
    layers = [keras.Input((sizes[0],))]
    layers += [keras.layers.Dense(width, activation="tanh") for width in sizes[1:-1]]
    layers += [keras.layers.Dense(sizes[-1])]
    return keras.Sequential(layers)


def random_batch(batch: int, features: int, classes: int, seed: int, dtype: str):
    x = tf.random.stateless_normal([batch, features], seed=[seed, 1], dtype=dtype)
    y = tf.random.stateless_uniform([batch], seed=[seed, 2], maxval=classes, dtype=tf.int32)
    return x, y


def _dot(a, b):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def back_over_back_hvp(f, vs, v):
    """``H v`` as the gradient of ``<grad f, v>``: two reverse passes, the textbook way."""
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(vs)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(vs)
            value = f()
        grads = inner.gradient(value, vs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad_dot_v = _dot(grads, v)
    return outer.gradient(grad_dot_v, vs, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def max_abs_diff(a, b) -> float:
    return float(tf.reduce_max(tf.abs(flatten(a) - flatten(b))))


def row(name: str, ms: float, ratio: float, unit: str) -> str:
    return f"  {name:<44} {ms:>10.3f} {ratio:>8.2f}x {unit}"


def bench_hvp_vs_grad(args) -> list[str]:
    sizes, batch = [784, 256, 256, 10], 256
    model = mlp(sizes)
    vs, _ = as_list(model.trainable_variables)
    n = flat_size(vs)
    x, y = random_batch(batch, sizes[0], sizes[-1], args.seed, args.dtype)
    v = [tf.random.stateless_normal(w.shape, seed=[args.seed, 10 + i], dtype=w.dtype)
         for i, w in enumerate(vs)]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # The batch and v are arguments, not captured constants, so the graph cannot fold them.
    x_spec = tf.TensorSpec(x.shape, x.dtype)
    y_spec = tf.TensorSpec(y.shape, y.dtype)
    v_spec = [tf.TensorSpec(w.shape, w.dtype) for w in vs]

    def loss(x, y):
        return lambda: loss_fn(y, model(x, training=True))

    @tf.function(input_signature=[x_spec, y_spec])
    def grad(x, y):
        return higher_order.value_and_grad(loss(x, y), vs)[1]

    @tf.function(input_signature=[x_spec, y_spec, v_spec])
    def hvp_fob(x, y, v):
        return higher_order.hvp(loss(x, y), vs, v)

    @tf.function(input_signature=[x_spec, y_spec, v_spec])
    def hvp_bob(x, y, v):
        return back_over_back_hvp(loss(x, y), vs, v)

    hv_fob, hv_bob = hvp_fob(x, y, v), hvp_bob(x, y, v)
    diff, scale = max_abs_diff(hv_fob, hv_bob), float(tf.reduce_max(tf.abs(flatten(hv_bob))))

    number = 3  # a gradient takes milliseconds: several calls per repeat smooth the timer
    t = median_ms({"grad": lambda: grad(x, y), "fob": lambda: hvp_fob(x, y, v),
                   "bob": lambda: hvp_bob(x, y, v)}, args.repeats, number)
    t_grad, t_fob, t_bob = t["grad"], t["fob"], t["bob"]

    arch = "-".join(map(str, sizes))
    return [
        f"1. HVP vs gradient: MLP {arch} tanh, {n:,} params, batch {batch}, cross-entropy",
        row("gradient (lab.higher_order.value_and_grad)", t_grad, 1.0, "grad"),
        row("HVP forward-over-back (lab.higher_order.hvp)", t_fob, t_fob / t_grad, "grad"),
        row("HVP back-over-back (nested GradientTapes)", t_bob, t_bob / t_grad, "grad"),
        f"  forward-over-back / back-over-back time: {t_fob / t_bob:.2f}",
        f"  max |Hv_fob - Hv_bob| = {diff:.2e}  (max |Hv| = {scale:.2e}, "
        f"relative {diff / scale:.1e})",
    ]


def bench_dense_hessian(args) -> list[str]:
    sizes, batch = ([10, 16, 10] if args.quick else [20, 32, 10]), 128
    model = mlp(sizes)
    vs, _ = as_list(model.trainable_variables)
    n = flat_size(vs)
    x, y = random_batch(batch, sizes[0], sizes[-1], args.seed + 1, args.dtype)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x_spec = tf.TensorSpec(x.shape, x.dtype)
    y_spec = tf.TensorSpec(y.shape, y.dtype)
    v_spec = [tf.TensorSpec(w.shape, w.dtype) for w in vs]
    # Basis vectors e_i shaped like the variables, built eagerly: lab.variables.unflatten
    # fails inside a tf.function (flat_size calls int() on a tensor), so keep it out of graphs.
    basis = [tf.reshape(block, [n, *w.shape]) for block, w in
             zip(tf.split(tf.eye(n, dtype=args.dtype), [w.shape.num_elements() for w in vs],
                          axis=1), vs)]

    def loss(x, y):
        return lambda: loss_fn(y, model(x, training=True))

    @tf.function(input_signature=[x_spec, y_spec])
    def hessian_pfor(x, y):
        return higher_order.hessian(loss(x, y), vs)

    def flat_hvp(x, y, e):
        return flatten(higher_order.hvp(loss(x, y), vs, e))

    @tf.function(input_signature=[x_spec, y_spec])
    def hessian_map_fn(x, y):
        # One graph, a tf.while_loop over the basis: no Python overhead per HVP.
        return tf.map_fn(lambda e: flat_hvp(x, y, e), basis,
                         fn_output_signature=tf.TensorSpec([n], args.dtype))

    @tf.function(input_signature=[x_spec, y_spec, v_spec])
    def hvp_compiled(x, y, e):
        return flat_hvp(x, y, e)

    basis_rows = [[b[i] for b in basis] for i in range(n)]  # sliced once, outside the timing

    def hessian_python_loop():
        return tf.stack([hvp_compiled(x, y, e) for e in basis_rows])

    h_pfor = hessian_pfor(x, y)
    h_map = hessian_map_fn(x, y)
    h_loop = hessian_python_loop()
    scale = float(tf.reduce_max(tf.abs(h_pfor)))
    diff_map = float(tf.reduce_max(tf.abs(h_pfor - h_map)))
    diff_loop = float(tf.reduce_max(tf.abs(h_pfor - h_loop)))
    asymmetry = float(tf.reduce_max(tf.abs(h_pfor - tf.transpose(h_pfor))))

    # The Python loop takes about a second per repeat at n = 1002: a third of the repeats.
    repeats = max(3, args.repeats // 3)
    t = median_ms({"pfor": lambda: hessian_pfor(x, y), "map_fn": lambda: hessian_map_fn(x, y),
                   "loop": hessian_python_loop}, repeats, warmup=1)
    t_pfor, t_map, t_loop = t["pfor"], t["map_fn"], t["loop"]
    t_best, best = min((t_map, "tf.map_fn"), (t_loop, "Python loop"))

    arch = "-".join(map(str, sizes))
    return [
        f"2. Dense Hessian: MLP {arch} tanh, n = {n:,} params, batch {batch}, "
        f"{repeats} repeats",
        row("lab.higher_order.hessian (pfor Jacobian)", t_pfor, 1.0, "hessian"),
        row(f"{n} HVPs, tf.map_fn in one tf.function", t_map, t_map / t_pfor, "hessian"),
        row(f"{n} HVPs, Python loop over compiled hvp", t_loop, t_loop / t_pfor, "hessian"),
        f"  fastest loop of HVPs: {best}; it takes {t_best / t_pfor:.2f}x the pfor Hessian "
        f"({t_best / n * 1e3:.1f} us per HVP)",
        f"  max |H_pfor - H_map_fn| = {diff_map:.2e}, max |H_pfor - H_loop| = {diff_loop:.2e}",
        f"  (max |H| = {scale:.2e}; max |H - H^T| = {asymmetry:.2e})",
    ]


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    keras.config.set_floatx(args.dtype)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"bench_higher_order: TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"NumPy {np.__version__}, Python {platform.python_version()}")
    print(f"CPUs available: {cpus} (os.cpu_count() = {os.cpu_count()}), "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}, dtype {args.dtype}, "
          f"repeats {args.repeats}{', quick' if args.quick else ''}, seed {args.seed}")
    print(f"  {'variant':<44} {'median ms':>10} {'ratio':>9}")
    for line in bench_hvp_vs_grad(args) + bench_dense_hessian(args):
        print(line)


if __name__ == "__main__":
    main()
