import copy
import gc
import pickle
import weakref

import keras
import numpy as np
import tensorflow as tf

from lab import compile_cache
from lab.higher_order import input_gradient


class Owner:
    pass


class Slotted:
    __slots__ = ("value",)


def _loss_fn(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(3)])


def _attack_like(model, key="attack"):
    """A cached tf.function that closes over ``model``, as attacks.fgsm builds one."""
    traces = []

    def build():
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32),
                                      tf.TensorSpec([None], tf.int32)])
        def attack(x, y):
            traces.append(1)  # Python side effect: runs only while tracing
            return x + 0.1 * tf.sign(input_gradient(model, _loss_fn, x, y))
        return attack

    return compile_cache.cached_function(model, key, build), traces


def test_built_once_per_owner_and_key_and_dropped_with_the_owner():
    builds = []
    build = lambda: builds.append(1) or (lambda: len(builds))
    owner = Owner()
    first = compile_cache.cached_function(owner, "a", build)
    assert compile_cache.cached_function(owner, "a", build) is first
    assert compile_cache.cached_function(owner, "b", build) is not first
    assert compile_cache.cached_function(Owner(), "a", build) is not first
    assert len(builds) == 3
    alive = weakref.ref(owner)
    del owner, first
    gc.collect()
    assert alive() is None


def test_a_keras_model_captured_by_its_function_is_freed(rng):
    model = _model()
    x = tf.constant(rng.normal(size=(5, 4)), tf.float32)
    y = tf.constant([0, 1, 2, 0, 1], tf.int32)
    attack, traces = _attack_like(model)
    again, _ = _attack_like(model)
    assert again is attack
    attack(x, y)
    again(x[:3], y[:3])
    assert len(traces) == 1
    alive = weakref.ref(model)
    del model, attack, again
    gc.collect()
    assert alive() is None


def test_a_closure_captured_by_its_function_is_freed():
    w = tf.Variable([1.0, 2.0])
    traces = []

    def loss():
        traces.append(1)  # Python side effect: runs only while tracing
        return tf.reduce_sum(w ** 2)

    def builder(f):  # f lives in builder's closure, which `del loss` below does not clear
        def build():
            return tf.function(lambda: f() * 2.0)
        return build

    first = compile_cache.cached_function(loss, "double", builder(loss))
    assert compile_cache.cached_function(loss, "double", builder(loss)) is first
    first(), first()
    assert len(traces) == 1
    alive = weakref.ref(loss)
    del loss, first
    gc.collect()
    assert alive() is None


def test_a_bound_method_is_cached_on_its_instance_and_freed_with_it():
    class Loss:
        def value(self):
            return 1.0

    instance = Loss()
    builds = []
    build = lambda method: lambda: builds.append(1) or (lambda: method())
    # Two accesses give two bound-method objects: still one function.
    first = compile_cache.cached_function(instance.value, "k", build(instance.value))
    assert compile_cache.cached_function(instance.value, "k", build(instance.value)) is first
    assert len(builds) == 1 and first() == 1.0
    alive = weakref.ref(instance)
    del instance, first
    gc.collect()
    assert alive() is None


def test_owners_that_cannot_hold_the_cache_get_a_fresh_function_each_call():
    builds = []
    build = lambda: builds.append(1) or len
    for owner in (3, Slotted(), Owner):  # no __dict__ / no weakref, slots, read-only __dict__
        assert compile_cache.cached_function(owner, "a", build) is len
        assert compile_cache.cached_function(owner, "a", build) is len
    assert len(builds) == 6


def test_a_copy_of_the_owner_does_not_reuse_the_original_functions():
    owner = Owner()
    owner.scale = 2
    build = lambda: (lambda: owner.scale)
    compile_cache.cached_function(owner, "a", build)
    twin = copy.copy(owner)  # shares the original's __dict__ entries, cache included
    built_for_twin = lambda: (lambda: "twin")
    assert compile_cache.cached_function(twin, "a", built_for_twin)() == "twin"
    assert compile_cache.cached_function(owner, "a", build)() == 2
    # Pickles of the owner carry no functions (tf.functions cannot be pickled).
    restored = pickle.loads(pickle.dumps(copy.deepcopy(owner)))
    assert restored.scale == 2
    assert compile_cache.cached_function(restored, "a", built_for_twin)() == "twin"


def test_an_attacked_model_still_saves_loads_and_describes_itself(rng, tmp_path):
    model = _model()
    config = model.get_config()
    weights = [v.path for v in model.weights]
    x = tf.constant(rng.normal(size=(5, 4)), tf.float32)
    y = tf.constant([0, 1, 2, 0, 1], tf.int32)
    attack, _ = _attack_like(model)
    adversarial = attack(x, y)

    assert model.get_config() == config
    assert [v.path for v in model.weights] == weights
    assert len(model.trainable_variables) == 6 and len(model.non_trainable_variables) == 2
    model.summary(print_fn=lambda *args, **kwargs: None)
    path = tmp_path / "attacked.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(adversarial), model(adversarial), rtol=1e-6)
    # The loaded model starts without the original's cache and gets its own function.
    loaded_attack, _ = _attack_like(loaded)
    assert loaded_attack is not attack
    np.testing.assert_allclose(loaded_attack(x, y), adversarial, rtol=1e-6)
