import json

import keras
import numpy as np
import pytest

from lab.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    optimizer_state,
    restore_optimizer,
    save_checkpoint,
)


def test_arrays_and_state_round_trip_and_replace_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint"
    assert not has_checkpoint(path)
    save_checkpoint(path, {"weights": [np.ones((2, 3)), np.arange(4)]}, {"epoch": 1})
    arrays = {"weights": [np.zeros(2, np.float32)], "empty": [],
              "rng": [np.array([1, 2], np.int64)]}
    save_checkpoint(path, arrays, {"epoch": 2, "history": [{"loss": float("nan")}]})
    loaded, state = load_checkpoint(path)
    assert state["epoch"] == 2 and np.isnan(state["history"][0]["loss"])
    assert set(loaded) == {"weights", "empty", "rng"} and loaded["empty"] == []
    for name in arrays:
        for saved, back in zip(arrays[name], loaded[name]):
            assert back.dtype == saved.dtype
            np.testing.assert_array_equal(back, saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


@pytest.mark.parametrize("damage, message", [
    (lambda path: (path / "state.json").unlink(), "no checkpoint here"),
    (lambda path: (path / "state.json").write_text("{"), "not a checkpoint record"),
    (lambda path: (path / "arrays.npz").unlink(), "checkpoint arrays missing"),
    (lambda path: (path / "arrays.npz").write_bytes(b"PK\x03\x04 torn"), "arrays unreadable"),
    (lambda path: (path / "state.json").write_text(json.dumps(
        {"arrays": {"weights": 3}, "state": {}})), "arrays unreadable"),
])
def test_a_damaged_checkpoint_names_its_file(tmp_path, damage, message):
    save_checkpoint(tmp_path / "c", {"weights": [np.ones(2)]}, {})
    damage(tmp_path / "c")
    with pytest.raises(ValueError, match=message):
        load_checkpoint(tmp_path / "c")


def _adam_on(model):
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    return optimizer


def test_adam_restored_from_its_state_takes_the_same_next_step():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    grads = [np.full(v.shape, 0.5, np.float32) for v in model.trainable_variables]
    optimizer = _adam_on(model)
    for _ in range(3):
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    weights, state = model.get_weights(), optimizer_state(optimizer)

    twin = keras.models.clone_model(model)
    twin.set_weights(weights)
    restored = _adam_on(twin)
    restore_optimizer(restored, state)
    assert int(restored.iterations) == 3
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    restored.apply_gradients(zip(grads, twin.trainable_variables))
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_an_optimizer_state_of_another_model_is_refused():
    small = _adam_on(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    other = _adam_on(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match=r"values\[2\] must have the shape of optimizer variable"):
        restore_optimizer(small, optimizer_state(other))
    with pytest.raises(ValueError, match="one array per optimizer variable"):
        restore_optimizer(small, optimizer_state(small)[:-1])
