"""``mlp approve``: answer a run's approval request over the Airflow REST API.

The DAG's ``approve`` task (:mod:`tasks.orchestration.approval`) waits in Airflow's
``awaiting_input`` state; this finds the pending request (``GET .../hitlDetails``) and
answers it (``PATCH .../hitlDetails``) with ``Approve`` or ``Reject`` and a reason, as the
Airflow UI's Required Actions page does. The task then resumes: deploy runs, or is skipped.
"""

from __future__ import annotations

from typing import Any

from tasks.operations.airflow_api import AirflowClient, AirflowError

TASK_ID = "approve"  # the DAG's approval task (tasks.orchestration.approval.TASK_ID)


def approve(use_case: str, run_id: str | None = None, *, reject: bool = False,
            reason: str = "", client: AirflowClient | None = None) -> dict[str, Any]:
    """Approve (or reject) the pending approval request of a run of ``use_case``.

    Args:
        use_case: The DAG id.
        run_id: The DAG run; default the only run of ``use_case`` waiting for approval.
        reject: Reject instead of approve (deploy is skipped; nothing is registered).
        reason: Why; required with ``reject``, kept on the candidate's MLflow run.
        client: API client (default: from the environment).

    Returns:
        ``{"use_case", "dag_run_id", "decision", "reason", "responded_at", "responded_by"}``.

    Raises:
        ValueError: ``reject`` without a reason.
        AirflowError: The API server is not reachable, no run waits, several do and no
            ``run_id`` was given, or the API refused the answer.

    """
    reason = (reason or "").strip()
    if reject and not reason:
        raise ValueError("--reject needs --reason: it is kept on the MLflow run")
    client = client or AirflowClient.from_env()
    if not client.reachable():
        raise AirflowError(f"no Airflow API server answers at {client.url}: start the "
                           "services (make up) or answer in the Airflow UI")
    pending = [r for r in client.approval_requests(use_case, run_id or "~")
               if r["task_id"] == TASK_ID]
    if not pending:
        where = f"run {run_id} of {use_case}" if run_id else f"no run of {use_case}"
        raise AirflowError(f"{where} is waiting for approval" if not run_id
                           else f"{where} is not waiting for approval")
    runs = sorted({r["dag_run_id"] for r in pending})
    if len(runs) > 1:
        raise AirflowError(f"{len(runs)} runs of {use_case} wait for approval: "
                           f"{', '.join(runs)}; choose one with --run")
    req = pending[0]
    option = "Reject" if reject else "Approve"
    out = client.respond(use_case, req["dag_run_id"], TASK_ID, req["map_index"], option,
                         {"reason": reason})
    return {"use_case": use_case, "dag_run_id": req["dag_run_id"],
            "decision": "rejected" if reject else "approved", "reason": reason,
            "responded_at": out["responded_at"], "responded_by": out["responded_by"]}
