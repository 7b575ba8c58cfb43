"""Autoencoders: the model reconstructs its (transformed) input; reconstruction MSE."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.tfrecord import DatasetReader
from tasks.objectives import plots
from tasks.objectives.base import EvalOutput, Objective, Target, reconstruction_errors
from tasks.spec import ModelSpec


def own_input(x: Any, y: Any, stats: Mapping[str, Any]) -> Any:
    """Training target of an autoencoder: its own input (already transformed)."""
    return x


class Autoencoder(Objective):
    """Reconstruct the input; images also get input/reconstruction pairs drawn."""

    kind = "autoencoder"
    metrics = ("test_reconstruction_mse",)

    def target(self, model: ModelSpec) -> Target:
        return model.target or own_input

    def evaluate(self, trained: Any, reader: DatasetReader, model: ModelSpec,
                 calibration: Mapping[str, Any], out_dir: Path) -> EvalOutput:
        target = self.target(model)
        errors, _ = reconstruction_errors(trained, reader, model, target, "test")
        pngs = []
        x, t = next(iter(reader.split("test", model.input_key, model.label_key, 1024,
                                      target=target)))
        if len(t.shape) == 3:  # images: show what the model sees and gives back
            pngs.append(plots.plot_reconstructions(t.numpy(), trained.predict_on_batch(x),
                                                   out_dir / "reconstructions.png"))
        return EvalOutput({"test_reconstruction_mse": float(np.mean(errors))}, pngs)
