"""A real Airflow run of the object_detection DAG on a few dozen generated scenes.

The parent is provided first: a tiny ``cifar10`` model (the use case's own builder,
untrained) registered as ``cifar10@champion``. Checks the parent lineage on the run and
the registered version, that the detector's backbone starts from the parent's weights,
the transfer ablation (a child run with a random backbone, mAP@0.5 of both arms), the
plots, and that the served detector still answers a base64 JPEG with the Object
Detection API's outputs after the parent's alias was deleted and then moved. The gate is
relaxed: tiny data cannot reach the real bar.
"""

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from tests.conftest import serving

pytestmark = pytest.mark.slow

CONF = {"source_dir": "synthetic:40:1", "epochs": 1, "batch_size": 8, "validation_size": 8}
KEY = "20260601T000000Z"


def _register_tiny_cifar10():
    """An untrained cifar10 CNN registered as cifar10@champion; returns (client, model)."""
    import keras
    import mlflow

    from models.cifar10 import build_model
    from tasks.tracking import configure

    client = configure()
    keras.utils.set_random_seed(3)
    model = build_model({}, {"train": {"features": {"image": {"min": 0.0, "max": 255.0}}}})
    with mlflow.start_run(run_name="tiny-cifar10-parent"):
        info = mlflow.tensorflow.log_model(model, name="model")
    for _ in range(2):  # versions 1 and 2: the alias can move later
        mv = mlflow.register_model(info.model_uri, "cifar10")
    client.set_registered_model_alias("cifar10", "champion", "1")
    return client, model, mv


def test_detection_dag_parent_lineage_ablation_and_serving(airflow_db, own_mlflow):
    import keras

    from models.object_detection import parent_convolutions
    from tasks.core.run import RunLayout
    from tasks.data.detection import decode
    from tasks.data.tfrecord import split_files
    from tasks.features.detection import decode_map, resize_image
    from tasks.features.layers import register_all
    from tasks.operations.examples import write_example_request
    from tasks.orchestration.dag_factory import build_dag
    from tasks.spec import catalog

    client, parent, _ = _register_tiny_cifar10()
    spec = catalog.get("object_detection")
    spec = replace(spec, gate=replace(spec.gate, min_value=0.0))
    dr = build_dag(spec).test(logical_date=datetime(2026, 6, 1, tzinfo=UTC), run_conf=CONF)
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert set(states.values()) == {"success"}, states

    champion = client.get_model_version_by_alias("object_detection", "champion")
    assert champion.tags["parent_model"] == "cifar10"
    assert champion.tags["parent_version"] == "1"
    assert champion.tags["parent_alias"] == "champion"
    run = client.get_run(champion.run_id)
    assert run.data.tags["parent_version"] == "1"
    metrics = run.data.metrics
    assert 0.0 <= metrics["test_map_50"] <= 1.0
    for arm in ("transfer", "from_scratch"):
        for key in ("validation_map_50", "test_map_50", "test_loss"):
            assert f"ablation_{arm}_{key}" in metrics
    assert metrics["ablation_transfer_test_map_50"] == pytest.approx(metrics["test_map_50"])
    assert run.data.tags["ablation_winner"] in ("transfer", "from_scratch")
    children = client.search_runs([run.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert [c.data.tags["ablation_arm"] for c in children] == ["from_scratch"]
    assert children[0].data.params["backbone"] == "scratch"
    assert run.data.params["backbone"] == "parent"
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/detections.png", "plots/learning_curves.png",
            "plots/ablation_learning_curves.png"} <= plots

    # the fitted backbone started from the parent: one epoch moves it only a little
    register_all()
    layout = RunLayout.of("object_detection", KEY)
    trained = keras.models.load_model(layout.train_dir / "trained.keras")
    start = parent_convolutions(parent)[0].get_weights()[0]
    now = trained.get_layer("backbone_conv1").get_weights()[0]
    assert np.corrcoef(start.ravel(), now.ravel())[0, 1] > 0.9

    # the parent's alias is deleted, then set to another version: the detector is intact
    client.delete_registered_model_alias("cifar10", "champion")
    client.set_registered_model_alias("cifar10", "champion", "2")

    record = next(iter(__import__("tensorflow").data.TFRecordDataset(
        split_files(layout.dataset_dir, "test")))).numpy()
    scene = decode(record)
    assert scene.format == "jpeg"
    import tensorflow as tf

    pixels = resize_image(tf.io.decode_jpeg(scene.encoded, channels=3), 96)[None]
    expected = {k: v.numpy() for k, v in decode_map(trained(pixels, training=False), 4,
                                                    20).items()}
    request = json.loads(write_example_request("object_detection", layout).read_text())
    assert request["instances"][0] == {"b64": base64.b64encode(scene.encoded).decode()}
    with serving(("object_detection",)) as base:
        r = httpx.post(f"{base}/v1/models/object_detection:predict", json=request, timeout=60)
        assert r.status_code == 200, r.text
        answer = r.json()["predictions"][0]
        assert set(answer) == {"detection_boxes", "detection_classes", "detection_scores",
                               "num_detections"}
        assert np.asarray(answer["detection_boxes"]).shape == (20, 4)
        np.testing.assert_allclose(answer["detection_scores"],
                                   expected["detection_scores"][0], atol=1e-4)
        np.testing.assert_allclose(answer["detection_boxes"],
                                   expected["detection_boxes"][0], atol=1e-3)
        assert answer["num_detections"] == expected["num_detections"][0]
        bad = httpx.post(f"{base}/v1/models/object_detection:predict",
                         json={"instances": [{"b64": base64.b64encode(b"no image").decode()}]},
                         timeout=60)
        assert bad.status_code == 400
