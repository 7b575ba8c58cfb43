"""A real Airflow run of the cifar10 DAG on a few hundred generated colour images.

Checks the ablation (a child MLflow run per arm, comparison metrics and curves on the
registered run), the plots, the registry, and that the served model does no augmentation:
the same raw 32x32x3 instance twice gives the same answer, equal to the centre crop fed to
the trained network. The gate is relaxed: tiny data cannot reach the real bar.
"""

import base64
import io
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import serving

pytestmark = pytest.mark.slow

CONF = {"source_dir": "synthetic:250:3", "epochs": 2, "batch_size": 50,
        "validation_size": 50}


def test_cifar10_dag_ablation_registry_and_serving(airflow_db, own_mlflow):
    import keras

    from tasks.core.config import settings
    from tasks.core.run import RunLayout
    from tasks.data.cifar import read_batch_file
    from tasks.features.layers import register_all
    from tasks.orchestration.dag_factory import build_dag
    from tasks.spec import catalog
    from tasks.tracking import configure

    spec = catalog.get("cifar10")
    spec = replace(spec, gate=replace(spec.gate, min_value=0.0))
    dr = build_dag(spec).test(logical_date=datetime(2026, 5, 1, tzinfo=UTC), run_conf=CONF)
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert set(states.values()) == {"success"}, states

    client = configure()
    champion = client.get_model_version_by_alias("cifar10", "champion")
    run = client.get_run(champion.run_id)
    metrics = run.data.metrics
    assert "test_accuracy" in metrics
    for arm in ("augmentation", "no_augmentation"):
        for key in ("validation_accuracy", "test_accuracy", "test_loss"):
            assert f"ablation_{arm}_{key}" in metrics
    # the model's own arm is scored the same way the evaluation step scores it
    assert metrics["ablation_augmentation_test_accuracy"] == pytest.approx(
        metrics["test_accuracy"], abs=1e-6)
    assert run.data.tags["ablation_winner"] in ("augmentation", "no_augmentation")
    children = client.search_runs([run.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert [c.data.tags["ablation_arm"] for c in children] == ["no_augmentation"]
    child = children[0]
    assert child.data.params["augment"] == "False" and run.data.params["augment"] == "True"
    assert child.data.params["epochs"] == run.data.params["epochs"] == "2"
    assert len(client.get_metric_history(child.info.run_id, "val_accuracy")) == 2
    assert child.data.metrics["test_accuracy"] == pytest.approx(
        metrics["ablation_no_augmentation_test_accuracy"])
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/learning_curves.png",
            "plots/ablation_learning_curves.png"} <= plots

    # the images the pipeline saw: the generated CIFAR-format test batch
    test_images, _ = read_batch_file(str(
        settings().root / "generated" / "synthetic" / "cifar-250-3" / "test_batch"))
    instances = test_images[:3].astype(float).tolist()
    register_all()
    trained = keras.models.load_model(
        RunLayout.of("cifar10", "20260501T000000Z").train_dir / "model.keras")
    crop = test_images[:3, 4:28, 4:28].astype("float32")
    # the deterministic path by hand: the stored rescaling, the centre crop, the CNN
    normalise = trained.get_layer("normalise")
    expected = trained.get_layer("cnn")(normalise(crop), training=False).numpy()

    with serving(("cifar10",)) as base:
        answers = []
        for _ in range(2):
            r = httpx.post(f"{base}/v1/models/cifar10:predict",
                           json={"instances": instances}, timeout=30)
            assert r.status_code == 200, r.text
            answers.append(np.array(r.json()["predictions"]))
        assert answers[0].shape == (3, 10)
        assert np.array_equal(answers[0], answers[1])  # no random distortion when serving
        np.testing.assert_allclose(answers[0], expected, atol=1e-5)
        meta = httpx.get(f"{base}/v1/models/cifar10/metadata").json()
        inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
        dims = [int(d["size"]) for d in inputs["pixels"]["tensor_shape"]["dim"]]
        assert dims == [-1, 32, 32, 3] and inputs["pixels"]["dtype"] == "DT_FLOAT"
        # the same images as base64 PNGs, decoded by the server: the same answers
        pngs = []
        for img in test_images[:3]:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pngs.append({"b64": base64.b64encode(buf.getvalue()).decode()})
        r = httpx.post(f"{base}/v1/models/cifar10:predict", json={"instances": pngs},
                       timeout=30)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["predictions"]), answers[0], atol=1e-6)
