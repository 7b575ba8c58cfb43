"""Optional human approval between a passing gate and deploy (Airflow 3's HITL operator).

:class:`GateApproval` is the standard provider's ``ApprovalOperator`` (options
``Approve`` / ``Reject``, a ``reason`` form field). When the run param
``require_approval`` is false it returns at once and deploy follows. When true, it asks
in the Airflow UI (Browse → Required Actions) with the gate report as the body and a
pointer to the report files, and the task waits (``awaiting_input``, no worker slot) until
an operator answers there or with ``mlp approve`` (the REST API's ``hitlDetails``). The
decision, who took it and the reason go onto the candidate's MLflow run; on ``Reject``
the operator skips deploy, so nothing is registered.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param

from tasks.core.progress import report
from tasks.core.run import RunLayout, run_key

log = logging.getLogger(__name__)

TASK_ID = "approve"


def approval_body(use_case: str, key: str, run_id: str) -> str:
    """The request's Markdown: where the gate report is, then the report itself."""
    layout = RunLayout.of(use_case, key)
    report = layout.gate_dir / "report.md"
    head = (f"Gate report of this run: `{report}` (also on MLflow run `{run_id}`, artifacts "
            f"`gate/report.md`, with the confusion matrices and learning curves).\n\n"
            "Approve to register and deploy the candidate; Reject (with a reason) to stop "
            "here: nothing is registered and the reason is kept on the MLflow run.\n\n---\n\n")
    if not report.is_file():
        return head + "(no gate report found)"
    # The report's images are files beside it, which the Airflow UI cannot show (they
    # render as broken images): name where they are instead.
    body = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)",
                  lambda m: f"- `{m.group(2)}` in `{report.parent}` (MLflow: `gate/{m.group(2)}`)",
                  report.read_text())
    return head + body


def record_decision(run_id: str, decision: dict[str, Any]) -> None:
    """Tag the candidate's MLflow run with the approval decision."""
    import mlflow

    from tasks import tracking

    tracking.configure()
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags({"approval": decision["decision"],
                         "approval.by": str(decision.get("by") or ""),
                         "approval.at": str(decision.get("at") or ""),
                         "approval.reason": str(decision.get("reason") or "")[:5000]})


class GateApproval(ApprovalOperator):
    """Wait for an operator's Approve/Reject after a passing gate (when required)."""

    def __init__(self, *, use_case: str, **kwargs: Any) -> None:
        # The DAG hands its own params in; the run reads those from the DAG. The form of
        # the request holds only the reason.
        kwargs.pop("params", None)
        super().__init__(
            task_id=TASK_ID,
            subject=f"Deploy the {use_case} candidate? (gate passed)",
            body="",
            # Optional (null allowed): a required field would keep the UI's Approve
            # button disabled until a reason was typed, where `mlp approve` needs none.
            params={"reason": Param(None, type=["null", "string"],
                                    description="Why (kept on the MLflow run)")},
            **kwargs,
        )
        self.use_case = use_case

    def execute(self, context: Any) -> Any:
        """Return at once unless ``require_approval``; else ask and wait for an answer."""
        if not context["params"].get("require_approval"):
            log.info("require_approval is false: deploying without asking")
            return {"required": False, "decision": "not required"}
        trained = context["ti"].xcom_pull(task_ids="train")
        dag_run = context["dag_run"]
        key = run_key(getattr(dag_run, "logical_date", None), dag_run.run_id)
        self.body = approval_body(self.use_case, key, trained["run_id"])
        # A progress line: `mlp run` shows it on the console, so the wait is never silent.
        report("⏸ approve    waiting for an operator: the Airflow UI (Browse → Required "
               "Actions) or `mlp approve %s --run %s [--reject --reason ...]`",
               self.use_case, dag_run.run_id)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Record the answer on the MLflow run; ``Reject`` then skips deploy.

        The decision is recorded before the operator acts on it: on ``Reject`` the
        provider's ``skip`` ends the task by raising, nothing after it runs.
        """
        if "error" in event or not event.get("chosen_options"):
            return super().execute_complete(context, event)  # timeout or error: it raises
        who = event.get("responded_by_user") or {}
        at = event.get("responded_at")
        decision = {
            "required": True,
            "decision": ("approved" if event["chosen_options"][0] == self.APPROVE
                         else "rejected"),
            "by": (who.get("name") or who.get("id")) if isinstance(who, dict) else str(who),
            "at": at.isoformat() if hasattr(at, "isoformat") else at,
            "reason": (event.get("params_input") or {}).get("reason") or "",
        }
        record_decision(context["ti"].xcom_pull(task_ids="train")["run_id"], decision)
        (log.info if decision["decision"] == "approved" else log.warning)(
            "%s by %s: %s", decision["decision"].upper(), decision["by"], decision["reason"])
        super().execute_complete(context, event)  # Reject: skips deploy (raises)
        return decision
