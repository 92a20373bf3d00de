"""Times gradlab's second-order helpers against their alternatives, side by side in one run.

1. Hessian-vector product over gradient, on a 784-256-256-10 tanh MLP (269,322 parameters)
   with a fixed random batch of 256 and a cross-entropy loss: the gradient
   (``lab.higher_order.value_and_grad``); ``lab.higher_order.hvp``, forward-over-back
   (Pearlmutter 1994); back-over-back, the gradient of ``<grad, v>`` through two nested
   ``GradientTape``s. Reports HVP/gradient ratios and checks that the two HVPs agree.
2. Dense Hessian on a 20-32-10 tanh MLP (1,002 parameters): ``lab.higher_order.hessian``
   (a Jacobian of the gradient vectorized with pfor) against n HVPs with the basis vectors,
   both as ``tf.map_fn`` in one ``tf.function`` and as a Python loop over a compiled HVP.
   Checks that the Hessians agree and reports the time ratios.

Every variant is a warmed-up ``tf.function`` taking the batch (and v) as arguments, so that
the graph cannot fold them as constants; times are medians over ``--repeats`` repeats::

    python benchmarks/bench_higher_order.py            # full run, about 30 s on 2 cores
    python benchmarks/bench_higher_order.py --quick    # smoke test, a few seconds

References:
  Pearlmutter. Fast exact multiplication by the Hessian. Neural Computation 1994.
"""

from __future__ import annotations

import argparse

import harness
import keras
import tensorflow as tf

from lab import higher_order
from lab.variables import as_list, flat_size, flatten, unflatten


def problem(sizes: list[int], batch: int, seed: int, dtype: str):
    """A tanh MLP with linear logits (``sizes``: input, hidden and output widths), its
    variables, a random batch, the cross-entropy ``loss(x, y)`` as a closure over the
    variables, and the input signature ``(x, y, v)`` of the compiled variants."""
    model = keras.Sequential([keras.Input((sizes[0],))]
                             + [keras.layers.Dense(w, activation="tanh") for w in sizes[1:-1]]
                             + [keras.layers.Dense(sizes[-1])])
    vs, _ = as_list(model.trainable_variables)
    x = tf.random.stateless_normal([batch, sizes[0]], seed=[seed, 1], dtype=dtype)
    y = tf.random.stateless_uniform([batch], seed=[seed, 2], maxval=sizes[-1], dtype=tf.int32)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss = lambda x, y: lambda: cross_entropy(y, model(x, training=True))
    spec = [tf.TensorSpec(x.shape, x.dtype), tf.TensorSpec(y.shape, y.dtype),
            [tf.TensorSpec(w.shape, w.dtype) for w in vs]]
    return vs, x, y, loss, spec


def back_over_back_hvp(f, vs, v):
    """``H v`` as the gradient of ``<grad f, v>``: two reverse passes, the textbook way."""
    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(vs)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(vs)
            value = f()
        grads = inner.gradient(value, vs, unconnected_gradients=zero)
        grad_dot_v = tf.add_n([tf.reduce_sum(g * u) for g, u in zip(grads, v)])
    return outer.gradient(grad_dot_v, vs, unconnected_gradients=zero)


def max_abs(tensor) -> float:
    return float(tf.reduce_max(tf.abs(tensor)))


def bench_hvp_vs_grad(args) -> None:
    sizes = [784, 256, 256, 10]
    vs, x, y, loss, spec = problem(sizes, 256, args.seed, args.dtype)
    v = [tf.random.stateless_normal(w.shape, seed=[args.seed, 10 + i], dtype=w.dtype)
         for i, w in enumerate(vs)]
    grad = tf.function(lambda x, y: higher_order.value_and_grad(loss(x, y), vs)[1],
                       input_signature=spec[:2])
    fob = tf.function(lambda x, y, v: higher_order.hvp(loss(x, y), vs, v), input_signature=spec)
    bob = tf.function(lambda x, y, v: back_over_back_hvp(loss(x, y), vs, v),
                      input_signature=spec)
    hv_fob, hv_bob = flatten(fob(x, y, v)), flatten(bob(x, y, v))

    print(f"1. HVP vs gradient: MLP {'-'.join(map(str, sizes))} tanh, {flat_size(vs):,} params,"
          f" batch 256, cross-entropy")
    # A gradient takes milliseconds: three calls per repeat smooth the timer.
    seconds = harness.take_turns({"grad": lambda: grad(x, y), "fob": lambda: fob(x, y, v),
                                  "bob": lambda: bob(x, y, v)}, args.repeats, number=3)
    t = harness.table(seconds, "grad", labels={
        "grad": "gradient (lab.higher_order.value_and_grad)",
        "fob": "HVP forward-over-back (lab.higher_order.hvp)",
        "bob": "HVP back-over-back (nested GradientTapes)"})
    diff, scale = max_abs(hv_fob - hv_bob), max_abs(hv_bob)
    print(f"  forward-over-back / back-over-back time: {t['fob'] / t['bob']:.2f}")
    print(f"  max |Hv_fob - Hv_bob| = {diff:.2e}  (max |Hv| = {scale:.2e}, "
          f"relative {diff / scale:.1e})")


def bench_dense_hessian(args) -> None:
    sizes = [10, 16, 10] if args.quick else [20, 32, 10]
    vs, x, y, loss, spec = problem(sizes, 128, args.seed + 1, args.dtype)
    n = flat_size(vs)
    # Basis vectors e_i shaped like the variables, built once, eagerly, outside the timing.
    basis_rows = [unflatten(e, vs) for e in tf.eye(n, dtype=args.dtype)]
    basis = [tf.stack(blocks) for blocks in zip(*basis_rows)]  # stacked for tf.map_fn
    flat_hvp = lambda x, y, e: flatten(higher_order.hvp(loss(x, y), vs, e))
    pfor = tf.function(lambda x, y: higher_order.hessian(loss(x, y), vs),
                       input_signature=spec[:2])
    # One graph, a tf.while_loop over the basis: no Python overhead per HVP.
    map_fn = tf.function(lambda x, y: tf.map_fn(
        lambda e: flat_hvp(x, y, e), basis, fn_output_signature=tf.TensorSpec([n], args.dtype)),
        input_signature=spec[:2])
    compiled_hvp = tf.function(flat_hvp, input_signature=spec)
    loop = lambda: tf.stack([compiled_hvp(x, y, e) for e in basis_rows])
    h_pfor, h_map, h_loop = pfor(x, y), map_fn(x, y), loop()

    # The Python loop takes about a second per repeat at n = 1002: a third of the repeats.
    repeats = max(3, args.repeats // 3)
    print(f"2. Dense Hessian: MLP {'-'.join(map(str, sizes))} tanh, n = {n:,} params, "
          f"batch 128, {repeats} repeats")
    seconds = harness.take_turns({"pfor": lambda: pfor(x, y), "map_fn": lambda: map_fn(x, y),
                                  "loop": loop}, repeats, warmup=1)
    t = harness.table(seconds, "pfor", labels={
        "pfor": "lab.higher_order.hessian (pfor Jacobian)",
        "map_fn": f"{n} HVPs, tf.map_fn in one tf.function",
        "loop": f"{n} HVPs, Python loop over compiled hvp"})
    best = min(("map_fn", "loop"), key=t.get)
    print(f"  fastest loop of HVPs: {dict(map_fn='tf.map_fn', loop='Python loop')[best]}; it "
          f"takes {t[best] / t['pfor']:.2f}x the pfor Hessian ({t[best] / n * 1e6:.1f} us per HVP)")
    print(f"  max |H_pfor - H_map_fn| = {max_abs(h_pfor - h_map):.2e}, "
          f"max |H_pfor - H_loop| = {max_abs(h_pfor - h_loop):.2e}")
    print(f"  (max |H| = {max_abs(h_pfor):.2e}; "
          f"max |H - H^T| = {max_abs(h_pfor - tf.transpose(h_pfor)):.2e})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=harness.positive, default=30,
                        help="timed repeats per variant (the median is reported)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 3 repeats and a smaller Hessian model")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    args = parser.parse_args(argv)
    args.repeats = min(args.repeats, 3) if args.quick else args.repeats
    keras.utils.set_random_seed(args.seed)
    keras.config.set_floatx(args.dtype)
    harness.header("bench_higher_order", f"GPUs: {len(tf.config.list_physical_devices('GPU'))}"
                   f", dtype {args.dtype}, repeats {args.repeats}, seed {args.seed}")
    bench_hvp_vs_grad(args)
    bench_dense_hessian(args)


if __name__ == "__main__":
    main()
