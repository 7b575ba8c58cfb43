"""Beam runner selection by configuration only.

``direct`` runs Beam's FnApiRunner in-process. We construct it ourselves instead of
naming ``DirectRunner`` because Beam >= 2.68's DirectRunner first tries to download and
start the Prism binary, which cannot work offline. Anything else is handed to Beam as
``--runner`` with pass-through options (Dask, Dataflow, Flink, Spark).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

_ALIASES = {
    "dask": "apache_beam.runners.dask.dask_runner.DaskRunner",
    "DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner",
}


def make_pipeline(runner: str = "direct", options: Sequence[str] = ()) -> beam.Pipeline:
    """Create a pipeline for the configured runner.

    Args:
        runner: ``direct`` (in-process), ``direct-multiprocess`` (one worker process per
            core), ``dask`` (needs ``--dask_client_address``) or any Beam runner name.
        options: Extra pipeline options, e.g. ``["--dask_client_address=host:8786"]``.

    Returns:
        An unstarted pipeline; use it as a context manager or call ``run()``.

    """
    opts = list(options)
    if runner in ("direct", "direct-multiprocess"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        if runner == "direct":
            opts += ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
        else:
            opts += [
                "--direct_running_mode=multi_processing",
                f"--direct_num_workers={os.cpu_count() or 2}",
            ]
        return beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(opts))
    runner_opt = f"--runner={_ALIASES.get(runner, runner)}"
    if _ALIASES.get(runner, runner).endswith("DaskRunner") and not any(
            o.startswith(("--dask_npartitions", "--dask_partition_size")) for o in opts):
        # The platform's elements are big units of work (a partition, a chunk of tens of
        # MB): one per Dask partition, not Beam's default of 128 per partition, which
        # puts a whole data set in one task.
        opts.append("--dask_partition_size=1")
    return beam.Pipeline(options=PipelineOptions([runner_opt, *opts]))


def run_to_completion(pipeline: beam.Pipeline) -> Any:
    """Run ``pipeline``, wait for it, and release what the runner held for the run.

    Beam's DaskRunner opens a ``distributed.Client`` per pipeline and never closes it: a
    task process that runs several pipelines would keep one connection per run, and each
    reconnects (logging a traceback) when the cluster goes away. It is closed here once
    the pipeline has finished or failed.

    Returns:
        The finished pipeline's result (its metrics stay readable on runners that keep
        them).

    """
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        if type(result).__name__ == "DaskRunnerResult":  # other runners hold no client
            result.client.close()
    return result
