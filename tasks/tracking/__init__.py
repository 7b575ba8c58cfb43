"""Tracking: every interaction with MLflow (tracking store and model registry).

- :mod:`tasks.tracking.store`: pointing MLflow at this installation's store, experiments
  with artifacts under the data root, dataset inputs, the platform's git commit;
- :mod:`tasks.tracking.registry`: registered versions and their lineage tags, the
  ``champion`` and ``previous`` aliases, rollback and the operators' listing.
"""

from tasks.tracking.registry import CHAMPION, PREVIOUS
from tasks.tracking.store import configure, experiment_id, git_commit, log_dataset

__all__ = ["CHAMPION", "PREVIOUS", "configure", "experiment_id", "git_commit", "log_dataset"]
