"""Resolving a parent model by name and alias, loading that exact version, lineage tags."""

import numpy as np
import pytest

from tasks.tracking.parents import (
    PARENT_TAGS,
    ParentMissing,
    load_parent,
    parent_tags,
    resolve_parent,
)


def _register(name):
    import keras
    import mlflow

    from tasks.tracking import configure

    client = configure()
    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(inp))
    with mlflow.start_run() as run:
        info = mlflow.tensorflow.log_model(model, name="model")
    mv = mlflow.register_model(info.model_uri, name)
    client.set_registered_model_alias(name, "champion", mv.version)
    return client, model, run.info.run_id, str(mv.version)


def test_resolves_the_alias_to_a_version_and_loads_it(own_mlflow):
    client, model, run_id, version = _register("parentish")
    parent = resolve_parent("parentish", "champion")
    assert (parent.name, parent.version, parent.run_id) == ("parentish", version, run_id)
    assert parent.uri == f"models:/parentish/{version}"
    assert parent.tags() == {"parent_model": "parentish", "parent_alias": "champion",
                             "parent_version": version, "parent_run_id": run_id}
    loaded = load_parent(parent)
    np.testing.assert_array_equal(loaded.get_layer("d").get_weights()[0],
                                  model.get_layer("d").get_weights()[0])
    # the version is pinned by number: deleting the alias does not affect loading it
    client.delete_registered_model_alias("parentish", "champion")
    assert load_parent(parent).get_layer("d").get_weights()[0].shape == (3, 2)
    with pytest.raises(ParentMissing, match="run `mlp run parentish`"):
        resolve_parent("parentish", "champion")


def test_missing_parent_model_says_what_to_run(own_mlflow):
    with pytest.raises(ParentMissing, match="'nothing_here' at alias 'champion'"):
        resolve_parent("nothing_here", "champion")


def test_parent_tags_are_picked_from_run_tags():
    tags = {"use_case": "x", "parent_model": "cifar10", "parent_version": "3"}
    assert parent_tags(tags) == {"parent_model": "cifar10", "parent_version": "3"}
    assert parent_tags({"use_case": "x"}) == {}
    assert set(PARENT_TAGS) >= {"parent_model", "parent_version"}
