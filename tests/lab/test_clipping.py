import numpy as np
import pytest
import tensorflow as tf

from lab import clipping


def _grads(rng):
    return [tf.constant(rng.normal(size=(3, 4)), tf.float32),
            tf.constant(rng.normal(size=(4,)) * 10, tf.float32),
            tf.constant(rng.normal(size=(2, 2, 1)), tf.float32)]


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 5.0, 1e3])
def test_global_norm_clipping_equals_tensorflow(rng, max_norm):
    grads = _grads(rng)
    ours, norm = clipping.clip_by_global_norm(grads, max_norm)
    theirs, their_norm = tf.clip_by_global_norm(grads, max_norm)
    np.testing.assert_allclose(norm, their_norm, rtol=1e-6)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_global_norm_is_the_norm_before_clipping(rng):
    grads = _grads(rng)
    expected = np.sqrt(sum(np.sum(g.numpy() ** 2) for g in grads))
    clipped, norm = clipping.clip_by_global_norm(grads, 0.5)
    np.testing.assert_allclose(norm, expected, rtol=1e-6)
    np.testing.assert_allclose(clipping.global_norm(clipped), 0.5, rtol=1e-6)


def test_none_kept_and_indexed_slices_kept_sparse(rng):
    sparse = tf.IndexedSlices(tf.constant([[3.0, 4.0], [6.0, 8.0]]), tf.constant([0, 2]),
                              tf.constant([5, 2]))
    grads = [None, sparse, tf.constant([1.0, 2.0])]
    ours, norm = clipping.clip_by_global_norm(grads, 1.0)
    theirs, their_norm = tf.clip_by_global_norm(grads, 1.0)
    assert ours[0] is None
    assert isinstance(ours[1], tf.IndexedSlices)
    np.testing.assert_array_equal(ours[1].indices, [0, 2])
    np.testing.assert_allclose(ours[1].values, theirs[1].values, rtol=1e-6)
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-6)
    np.testing.assert_allclose(norm, np.sqrt(9 + 16 + 36 + 64 + 1 + 4), rtol=1e-6)

    per_tensor = clipping.clip_by_norm(grads, 5.0)
    assert per_tensor[0] is None and isinstance(per_tensor[1], tf.IndexedSlices)
    np.testing.assert_allclose(per_tensor[1].values,
                               tf.clip_by_norm(sparse, 5.0).values, rtol=1e-6)

    by_value = clipping.clip_by_value(grads, -1.0, 5.0)
    assert by_value[0] is None and isinstance(by_value[1], tf.IndexedSlices)
    np.testing.assert_array_equal(by_value[1].values, [[3.0, 4.0], [5.0, 5.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nonfinite_norm_gives_nan_gradients_as_tensorflow_does(bad):
    """What to do with such a step is the train step's decision (it skips it whole)."""
    grads = [tf.constant([1.0, bad]), tf.constant([2.0])]
    clipped, norm = clipping.clip_by_global_norm(grads, 1.0)
    theirs, _ = tf.clip_by_global_norm(grads, 1.0)
    assert not np.isfinite(norm)
    for a, b in zip(clipped, theirs):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        assert np.all(np.isnan(a))


def test_clip_by_norm_and_value_equal_tensorflow(rng):
    grads = _grads(rng)
    for a, g in zip(clipping.clip_by_norm(grads, 1.5), grads):
        np.testing.assert_allclose(a, tf.clip_by_norm(g, 1.5), rtol=1e-6)
    for a, g in zip(clipping.clip_by_value(grads, -0.3, 0.2), grads):
        np.testing.assert_array_equal(a, tf.clip_by_value(g, -0.3, 0.2))


def test_bad_arguments_name_the_argument():
    grads = [tf.constant([1.0])]
    with pytest.raises(ValueError, match=r"max_norm must be > 0\. Received: max_norm=-1"):
        clipping.clip_by_global_norm(grads, -1.0)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        clipping.clip_by_norm(grads, 0.0)
    with pytest.raises(ValueError, match="lo must be <= hi"):
        clipping.clip_by_value(grads, 1.0, -1.0)
    with pytest.raises(ValueError, match="clipping must be > 0"):
        clipping.adaptive_clip(grads, grads, clipping=-0.01)
    with pytest.raises(ValueError, match="same length"):
        clipping.adaptive_clip(grads, grads + grads)


def _agc_reference(g, w, clipping_ratio, eps, axes):
    """AGC written out with NumPy, one unit at a time."""
    g, w = np.array(g, np.float64), np.array(w, np.float64)
    out = g.copy()
    units = np.moveaxis(g, -1, 0) if axes else [g]
    weights = np.moveaxis(w, -1, 0) if axes else [w]
    clipped_units = []
    for gu, wu in zip(units, weights):
        max_norm = clipping_ratio * max(np.linalg.norm(wu), eps)
        gn = np.linalg.norm(gu)
        clipped_units.append(gu * max_norm / gn if gn > max_norm else gu)
    out = np.moveaxis(np.stack(clipped_units), 0, -1) if axes else clipped_units[0]
    return out


def test_adaptive_clip_against_hand_computed_values():
    # Dense kernel [in=2, out=2]: unit 0 is column [3, 4] (|W|=5), unit 1 is [0, 1] (|W|=1).
    kernel = tf.constant([[3.0, 0.0], [4.0, 1.0]])
    grad = tf.constant([[0.3, 0.0], [0.4, 0.005]])  # column norms 0.5 and 0.005
    clipped = clipping.adaptive_clip([grad], [kernel], clipping=0.01, eps=1e-3)[0]
    # Unit 0: 0.5 > 0.01 * 5 = 0.05, so it is rescaled to norm 0.05; unit 1: 0.005 <= 0.01, kept.
    np.testing.assert_allclose(clipped, [[0.03, 0.0], [0.04, 0.005]], rtol=1e-6)


def test_adaptive_clip_conv_bias_none_and_eps(rng):
    conv_w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    conv_g = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    conv_g[..., 1] *= 1e-4  # one channel small enough to stay unclipped
    bias_w = np.zeros(4, np.float32)  # zero weights: eps sets the allowed norm
    bias_g = np.array([0.1, 0.0, 0.0, 0.0], np.float32)
    out = clipping.adaptive_clip([conv_g, None, bias_g], [conv_w, conv_w, bias_w],
                                 clipping=0.02, eps=1e-3)
    assert out[1] is None
    np.testing.assert_allclose(out[0], _agc_reference(conv_g, conv_w, 0.02, 1e-3, True),
                               rtol=1e-5)
    np.testing.assert_allclose(out[0][..., 1], conv_g[..., 1])
    np.testing.assert_allclose(out[2], [0.02 * 1e-3, 0, 0, 0], rtol=1e-5)


def test_adaptive_clip_densifies_indexed_slices():
    w = tf.ones([3, 2])
    g = tf.IndexedSlices(tf.constant([[10.0, 0.0]]), tf.constant([1]), tf.constant([3, 2]))
    out = clipping.adaptive_clip([g], [w], clipping=0.1)[0]
    # Column 0 has |W| = sqrt(3): the gradient 10 is cut to 0.1 * sqrt(3).
    np.testing.assert_allclose(out, [[0, 0], [0.1 * np.sqrt(3), 0], [0, 0]], rtol=1e-6)


def test_integer_gradients_are_rejected_with_their_index_and_dtype():
    # Without the check, clip_by_global_norm returned [0, 0]: the scale 0.2 cast to int32.
    ints = [tf.constant([1.0]), None, tf.constant([30, 40])]
    message = r"^grads\[2\] must be floating point\. Received: grads\[2\] of dtype int32$"
    with pytest.raises(ValueError, match=message):
        clipping.clip_by_global_norm(ints, 10.0)
    with pytest.raises(ValueError, match=message):
        clipping.clip_by_norm(ints, 10.0)
    with pytest.raises(ValueError, match=message):
        clipping.adaptive_clip(ints, [tf.ones(1), tf.ones(1), tf.ones(2)])
    with pytest.raises(ValueError, match=message):
        clipping.global_norm(ints)
    sparse = tf.IndexedSlices(tf.constant([[3, 4]], tf.int64), tf.constant([0]),
                              tf.constant([2, 2]))
    with pytest.raises(ValueError, match=r"grads\[0\] .* of dtype int64"):
        clipping.clip_by_global_norm([sparse], 1.0)
    with pytest.raises(ValueError, match=r"grads\[0\] .* of dtype int64"):
        clipping.clip_by_norm([np.array([3, 4])], 1.0)
    with pytest.raises(ValueError, match=r"grads\[0\] .* of dtype complex64"):
        clipping.global_norm([tf.constant([3 + 4j], tf.complex64)])
    # Floating point of any width, and NumPy arrays, still pass.
    clipped, norm = clipping.clip_by_global_norm([tf.constant([3.0], tf.float16),
                                                  np.array([4.0])], 1.0)
    np.testing.assert_allclose(norm, 5.0)
    np.testing.assert_allclose(clipped[0], [0.6], rtol=1e-3)
