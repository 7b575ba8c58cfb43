"""Autoencoders: the model reconstructs its (transformed) input; reconstruction MSE."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tasks.objectives import plots
from tasks.objectives.base import EvalOutput, Objective, Target, TestRows
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

    def score(self, outputs: Any, rows: TestRows, model: ModelSpec,
              out_dir: Path | None = None) -> EvalOutput:
        recon = np.asarray(outputs)
        t = np.asarray(self.target(model)(rows.features, rows.labels, rows.stats))
        errors = np.mean(np.square(recon - t).reshape(len(recon), -1), axis=1)
        pngs = []
        if out_dir is not None and t.ndim == 3:  # images: what the model sees and gives back
            pngs.append(plots.plot_reconstructions(t, recon, out_dir / "reconstructions.png"))
        return EvalOutput({"test_reconstruction_mse": float(np.mean(errors))}, pngs)
