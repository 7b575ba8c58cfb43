"""Draw the ten digits on /demo in headless Chromium and read back what the model says.

The ``digits`` use case runs for real (its DAG, on scikit-learn's 1,797 digits made into
MNIST files, fewer epochs than the default), is served beside a stand-in ``mnist``
(clothing) model, and the page, opened without ``?model=``, must choose ``digits``. Each
digit is drawn stroke by stroke with the mouse (tests/tasks/serving/strokes.py); the page
asks the server after every stroke and the test reads its last answer. Most of the ten
must come back as the digit drawn (the count is printed and kept as a test property);
the chooser then switches to the clothing model.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from tests.browser import chromium, draw, screenshot, wait_for
from tests.conftest import serving
from tests.tasks.serving.strokes import strokes

pytestmark = pytest.mark.slow

EPOCHS = 15
CLOTHING = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
            "Sneaker", "Bag", "Ankle boot")


def _register_clothing_stand_in():
    """An untrained mnist-shaped model registered as mnist@champion, with clothing names."""
    import keras
    import mlflow

    from models.mnist import build_model
    from tasks.core.run import EVALUATION_ARTIFACT
    from tasks.tracking import configure

    client = configure()
    keras.utils.set_random_seed(0)
    model = build_model({"variant": "softmax"},
                        {"train": {"features": {"image": {"min": 0.0, "max": 255.0}}}})
    with mlflow.start_run(run_name="clothing-stand-in"):
        mlflow.log_dict({"class_names": list(CLOTHING)}, EVALUATION_ARTIFACT)
        info = mlflow.tensorflow.log_model(model, name="model",
                                           pip_requirements=["tensorflow-cpu", "keras"])
    mv = mlflow.register_model(info.model_uri, "mnist")
    client.set_registered_model_alias("mnist", "champion", mv.version)


def _answer(driver, before: int, n_strokes: int) -> np.ndarray:
    from selenium.webdriver.common.by import By

    wait_for(lambda: driver.execute_script("return window.mlpDemo.requests")
             >= before + n_strokes
             or driver.find_element(By.ID, "status").get_attribute("data-state") == "error",
             what="the page's answers")
    status = driver.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "done", status.text
    return np.array(driver.execute_script("return window.mlpDemo.lastProbabilities"))


def test_drawn_digits_come_back_from_the_digits_model(airflow_db, own_mlflow, tmp_path,
                                                      record_property):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tasks.orchestration.dag_factory import build_dag
    from tasks.spec import catalog
    from tasks.tracking import configure

    dr = build_dag(catalog.get("digits")).test(
        logical_date=datetime(2026, 5, 1, tzinfo=UTC), run_conf={"epochs": EPOCHS})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    client = configure()
    champion = client.get_model_version_by_alias("digits", "champion")
    accuracy = client.get_run(champion.run_id).data.metrics["test_accuracy"]
    assert accuracy >= 0.97, accuracy  # the gate's bar, on 359 held-out real digits
    _register_clothing_stand_in()

    with serving(("digits", "mnist")) as base, chromium(tmp_path / "profile") as driver:
        driver.get(f"{base}/demo")
        wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute(
            "data-ready") == "true", what="the page")
        assert driver.find_element(By.ID, "model-name").text == "digits"
        assert driver.find_element(By.ID, "model-version").text == str(champion.version)
        labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#bars .label")]
        assert labels == [str(i) for i in range(10)]  # the data's classes: plain digits
        pad = driver.find_element(By.ID, "pad")
        recognised, answers = 0, {}
        for digit in range(10):
            driver.find_element(By.ID, "clear").click()
            before = driver.execute_script("return window.mlpDemo.requests")
            drawn = strokes(digit)
            draw(driver, pad, drawn)
            probs = _answer(driver, before, len(drawn))
            answers[digit] = (int(probs.argmax()), float(probs.max()))
            recognised += int(probs.argmax()) == digit
            if digit == 7:
                screenshot(driver, tmp_path, "demo-digits-7")
        record_property("drawn_digits_recognised", f"{recognised}/10")
        print(f"\ndrawn digits recognised: {recognised}/10; (digit: (answer, probability)) "
              f"{answers}; test accuracy {accuracy:.4f}")
        assert recognised >= 8, answers
        shown = driver.find_element(By.CSS_SELECTOR, "#bars .bar.top .label").text
        assert shown == str(answers[9][0])

        # clothing stays a choice: the chooser reloads the page with ?model=mnist
        choice = Select(driver.find_element(By.ID, "model-choice"))
        assert [o.get_attribute("value") for o in choice.options] == ["digits", "mnist"]
        choice.select_by_value("mnist")
        wait_for(lambda: "model=mnist" in driver.current_url
                 and driver.find_element(By.TAG_NAME, "body").get_attribute(
                     "data-ready") == "true", what="the clothing page")
        assert driver.find_element(By.ID, "model-name").text == "mnist"
        labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#bars .label")]
        assert labels[9] == "9 · Ankle boot"
        before = driver.execute_script("return window.mlpDemo.requests")
        draw(driver, driver.find_element(By.ID, "pad"), strokes(7))
        assert _answer(driver, before, 1).sum() == pytest.approx(1.0, abs=1e-4)
        screenshot(driver, tmp_path, "demo-clothing")
