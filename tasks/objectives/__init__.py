"""Objectives: one object per model kind (what training fits, evaluation measures, serving returns).

Kinds: ``classification``, ``binary``, ``regression``, ``autoencoder``, ``anomaly``,
``language_model``, ``detection``
(:mod:`tasks.objectives.base` says what each provides). ``ModelSpec.objective`` names one;
:func:`get` returns it. Adding a kind is adding a module with an :class:`Objective`
subclass and one line in :data:`KINDS`; the steps do not change.

:mod:`tasks.objectives.plots` holds the PNG plots the objectives and the gate report draw.
"""

from __future__ import annotations

from tasks.objectives.anomaly import Anomaly
from tasks.objectives.autoencoder import Autoencoder
from tasks.objectives.base import (
    Calibration,
    EvalOutput,
    Objective,
    TestRows,
    predict,
    reference_model,
)
from tasks.objectives.binary import Binary
from tasks.objectives.classification import Classification
from tasks.objectives.detection import Detection
from tasks.objectives.language_model import LanguageModel
from tasks.objectives.regression import Regression
from tasks.spec import SpecError

KINDS: dict[str, type[Objective]] = {
    cls.kind: cls for cls in (Classification, Binary, Regression, Autoencoder, Anomaly,
                              LanguageModel, Detection)
}


def get(kind: str) -> Objective:
    """The objective of a model kind.

    Raises:
        SpecError: Unknown kind (the message lists the known ones).

    """
    try:
        return KINDS[kind]()
    except KeyError:
        raise SpecError(f"unknown model objective {kind!r}; choose one of "
                        f"{sorted(KINDS)}") from None



__all__ = ["KINDS", "Calibration", "EvalOutput", "Objective", "TestRows", "get", "predict",
           "reference_model"]
