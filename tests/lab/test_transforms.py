import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from lab import clipping
from lab.transforms import AdaptiveClip, ClipByGlobalNorm, ClipByNorm, ClipByValue, chain


def test_chain_applies_transforms_in_order():
    grads = [tf.constant([3.0, -4.0])]
    params = [tf.constant([1.0, 1.0])]
    value_then_norm = chain(ClipByValue(-1.0, 1.0), ClipByGlobalNorm(1.0))(grads, params)
    norm_then_value = chain(ClipByGlobalNorm(1.0), ClipByValue(-0.5, 0.5))(grads, params)
    # [1, -1] has norm sqrt(2), scaled to norm 1.
    np.testing.assert_allclose(value_then_norm[0], [2 ** -0.5, -(2 ** -0.5)], rtol=1e-6)
    # [0.6, -0.8] after the norm clip, then the value clip.
    np.testing.assert_allclose(norm_then_value[0], [0.5, -0.5], rtol=1e-6)


def test_transforms_match_the_functions(rng):
    grads = [tf.constant(rng.normal(size=(4, 3)), tf.float32), None]
    params = [tf.constant(rng.normal(size=(4, 3)), tf.float32), tf.ones(3)]
    np.testing.assert_array_equal(ClipByNorm(0.5)(grads, params)[0],
                                  clipping.clip_by_norm(grads, 0.5)[0])
    np.testing.assert_array_equal(AdaptiveClip(0.05)(grads, params)[0],
                                  clipping.adaptive_clip(grads, params, 0.05)[0])
    assert ClipByGlobalNorm(1.0)(grads, params)[1] is None


def test_transforms_are_frozen_configs_with_validation():
    t = chain(AdaptiveClip(0.01), ClipByGlobalNorm(1.0))
    assert t == chain(AdaptiveClip(0.01), ClipByGlobalNorm(1.0))
    assert "ClipByGlobalNorm(max_norm=1.0" in repr(t)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.transforms = ()
    with pytest.raises(ValueError, match=r"max_norm must be > 0\. Received: max_norm=-2"):
        ClipByGlobalNorm(-2)
    with pytest.raises(ValueError, match="transforms\\[1\\]"):
        chain(ClipByNorm(1.0), "not a transform")


def test_a_value_clip_may_be_one_sided_but_a_nan_bound_is_refused():
    grads = [tf.constant([-3.0, 0.5, 3.0])]
    np.testing.assert_array_equal(ClipByValue(-np.inf, 1.0)(grads, grads)[0], [-3.0, 0.5, 1.0])
    np.testing.assert_array_equal(ClipByValue(-1.0, np.inf)(grads, grads)[0], [-1.0, 0.5, 3.0])
    # A NaN bound was accepted and turned every clipped gradient into NaN.
    with pytest.raises(ValueError, match=r"^lo must be in \[-inf, inf\]\. Received: lo=nan$"):
        ClipByValue(np.nan, 1.0)
    with pytest.raises(ValueError, match=r"^hi must be in \[-inf, inf\]\. Received: hi=nan$"):
        clipping.clip_by_value(grads, -1.0, np.nan)
