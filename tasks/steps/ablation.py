"""Ablation arms trained in the same run as the model (see :class:`tasks.spec.AblationSpec`).

Every arm gets the same data, seed, epochs and batch size as the model (the same budget)
and is fitted by the training step's own :func:`~tasks.steps.train.fit`, as a child MLflow
run (params, per-epoch metrics, TensorBoard logs, test metrics) of the model's run. The
model (the baseline arm) and every other arm are then scored on validation and test with
the same compiled metrics, so the comparison does not depend on which step computed what.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tasks.core.progress import report
from tasks.data.tfrecord import DatasetReader
from tasks.objectives import plots
from tasks.objectives.base import Objective
from tasks.spec import UseCaseSpec

log = logging.getLogger(__name__)

Fit = Callable[..., tuple[dict[str, list[float]], float]]


def _score(model: Any, reader: DatasetReader, spec: UseCaseSpec, objective: Objective,
           split: str) -> dict[str, float]:
    """The compiled metrics on the objective's batches, plus the objective's own scores.

    An objective whose figure of merit is not a compiled metric (a detector's mAP) adds
    it in :meth:`~tasks.objectives.base.Objective.ablation_scores`.
    """
    mk = spec.model
    ds = objective.dataset(reader, mk, split, 1024)
    scores = {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
    scores.update({k: float(v) for k, v in
                   objective.ablation_scores(model, reader, mk, split).items()})
    return scores


def run_ablation(spec: UseCaseSpec, params: Mapping[str, Any], model: Any,
                 history: Mapping[str, list[float]], train_seconds: float,
                 reader: DatasetReader, objective: Objective, out_dir: Path,
                 fit: Fit, build: Callable[[Mapping[str, Any]], Any] | None = None
                 ) -> dict[str, Any]:
    """Train the spec's ablation arms and compare them with the trained model.

    Must be called inside the model's active MLflow run (arms become its children).

    Args:
        spec: The use case (``spec.model.ablation`` set).
        params: The model's run params; each arm overrides some of them.
        model: The trained model (the baseline arm).
        history: Its per-epoch history.
        train_seconds: Its training time.
        reader: The preprocessed dataset.
        objective: The model kind (gives the training target).
        out_dir: Where the arms' TensorBoard logs and the curves PNG go.
        fit: The training step's fit (``fit(model, reader, spec, objective, params,
            tensorboard_dir) -> (history, seconds)``).
        build: ``build(params) -> compiled model`` (default: the spec's builder on the
            dataset's statistics; the training step passes one that hands a model built
            on a registered parent its parent).

    Returns:
        ``{"baseline", "metric", "winner", "budget", "arms": {name: {...}}}``; logged as
        ``evaluation/ablation.json``, metrics ``ablation_<arm>_<split>_<metric>``, the tag
        ``ablation_winner`` and ``plots/ablation_learning_curves.png``.

    """
    import keras
    import mlflow

    ab = spec.model.ablation
    seed, epochs, bs = (int(params.get("seed", 42)), int(params["epochs"]),
                        int(params["batch_size"]))
    parent = mlflow.active_run().info
    arms: dict[str, dict[str, Any]] = {ab.baseline: {
        "overrides": {}, "run_id": parent.run_id, "train_seconds": round(train_seconds, 2),
        "history": dict(history),
        **{split: _score(model, reader, spec, objective, split)
           for split in ("validation", "test")}}}
    for name, overrides in ab.arms.items():
        arm_params = {**params, **overrides}
        report("  ablation arm %s (%s): same data, seed %d, %d epochs, batch %d", name,
               overrides, seed, epochs, bs)
        keras.utils.set_random_seed(seed)  # the same initial state as the model had
        arm_model = (build(arm_params) if build is not None
                     else spec.model.build(arm_params, reader.stats))
        with mlflow.start_run(run_name=f"{parent.run_name}-{name}", nested=True,
                              experiment_id=parent.experiment_id,
                              tags={"ablation_arm": name, "ablation_of": parent.run_id}
                              ) as child:
            mlflow.log_params({**arm_params, "ablation_arm": name})
            tb_dir = Path(out_dir) / f"tensorboard_{name}"
            hist, seconds = fit(arm_model, reader, spec, objective, arm_params, tb_dir)
            mlflow.log_artifacts(str(tb_dir), "tensorboard")
            scores = {split: _score(arm_model, reader, spec, objective, split)
                      for split in ("validation", "test")}
            mlflow.log_metrics({"train_seconds": seconds,
                                **{f"test_{k}": v for k, v in scores["test"].items()}})
        arms[name] = {"overrides": dict(overrides), "run_id": child.info.run_id,
                      "train_seconds": round(seconds, 2), "history": hist, **scores}

    # The comparison metric: the gate's metric when it is a compiled one (test_accuracy
    # -> accuracy, in the gate's direction), else the loss.
    metric, higher = "loss", False
    if spec.gate and spec.gate.metric.removeprefix("test_") in arms[ab.baseline]["test"]:
        metric, higher = spec.gate.metric.removeprefix("test_"), spec.gate.higher_is_better
    ranked = sorted(arms, key=lambda a: arms[a]["test"][metric], reverse=higher)
    summary = {
        "baseline": ab.baseline, "metric": f"test_{metric}", "winner": ranked[0],
        "budget": {"epochs": epochs, "batch_size": bs, "seed": seed},
        "arms": arms,
    }
    mlflow.log_metrics({f"ablation_{arm}_{split}_{k}": v for arm, a in arms.items()
                        for split in ("validation", "test") for k, v in a[split].items()})
    mlflow.set_tag("ablation_winner", ranked[0])
    mlflow.log_dict(summary, "evaluation/ablation.json")
    curves = plots.learning_curves([(arm, a["history"]) for arm, a in arms.items()],
                                   Path(out_dir) / "ablation_learning_curves.png")
    if curves is not None:
        mlflow.log_artifact(str(curves), "plots")
    report("  ablation on test_%s: %s; winner %s", metric,
           ", ".join(f"{a} {arms[a]['test'][metric]:.4f}" for a in arms), ranked[0])
    return summary
