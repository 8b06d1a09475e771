"""QA artifacts: regression tests, probes and tickets per defect, the release gate, knowledge base and report.

These run after the hours (unpartitioned): they look at every defect seen so far, regenerate what changed
(files whose content is unchanged are not rewritten) and keep one file per item with its path in `qa.artifacts`.
"""

from datetime import timedelta

import dagster as dg
import polars as pl

from qa_assets.defs.automation.conditions import AFTER_ANY_HOUR
from qa_assets.defs.defects.assets import ANOMALIES, DEFECTS, append_decisions
from qa_assets.defs.resources import ArtifactsResource, WarehouseResource
from qa_assets.defs.root_causes.assets import ROOT_CAUSES
from qa_assets.defs.signals.assets import GRAPH_EDGES, GRAPH_NODES, SERVICE_WINDOWS
from qa_assets.defs.telemetry.assets import LANDED_KEYS, RAW_KEYS
from qa_assets.lib import governance
from qa_assets.lib import warehouse as wh
from qa_assets.lib.artifacts import release_gate as release_gate_lib
from qa_assets.lib.artifacts import report as report_lib
from qa_assets.lib.artifacts import delivery, writer
from qa_assets.lib.artifacts.knowledge_base import KNOWLEDGE_BASE as KB_SCHEMA
from qa_assets.lib.artifacts.knowledge_base import knowledge_base as build_knowledge_base
from qa_assets.lib.summary import markdown_table

GROUP = "qa_artifacts"
OWNERS = ["team:qa-platform"]
ARTIFACTS = dg.AssetKey(["qa", "artifacts"])
RELEASE_READINESS = dg.AssetKey(["qa", "release_readiness"])
KNOWLEDGE_BASE = dg.AssetKey(["qa", "knowledge_base"])
QA_REPORT = dg.AssetKey(["qa", "report"])
TICKET_DELIVERY = dg.AssetKey(["qa", "ticket_delivery"])
RECENT = timedelta(hours=48)  # artifacts are regenerated for defects seen this close to the newest data
REPORT_SCORES = timedelta(days=7)  # the anomaly-score plot covers this much of the newest data


def _feedback(con) -> pl.DataFrame | None:
    return wh.read_table(con, "raw.feedback") if wh.table_exists(con, "raw.feedback") else None


@dg.asset(key=ARTIFACTS, group_name=GROUP, kinds={"pytest", "duckdb"}, owners=OWNERS,
          deps=[DEFECTS, ROOT_CAUSES, RAW_KEYS["spans"], RAW_KEYS["test_cases"], RAW_KEYS["deployments"],
                GRAPH_NODES], pool="duckdb",
          automation_condition=AFTER_ANY_HOUR)
def qa_artifacts(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                 artifacts: ArtifactsResource) -> dg.MaterializeResult:
    """Per defect: a pytest regression test, a blackbox probe, symptom alerts, a log-absence check, ticket payloads."""
    with warehouse.connect() as con:
        if not wh.table_exists(con, "defects.defects"):
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "note": "no defects table yet"})
        newest = con.execute("SELECT max(last_seen) FROM defects.defects").fetchone()[0]
        if newest is None:
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "note": "no defects yet"})
        recent = wh.read_frame(con, "SELECT * FROM defects.defects WHERE last_seen >= ?", [newest - RECENT])
        causes = wh.read_frame(con, "SELECT * FROM rca.root_causes WHERE defect_id IN (SELECT unnest(?))",
                               [recent["defect_id"].to_list()])
        start, end = recent["first_seen"].min() - timedelta(hours=1), recent["last_seen"].max() + timedelta(minutes=5)
        spans = wh.read_frame(con, "SELECT * FROM raw.spans WHERE start_time BETWEEN ? AND ?", [start, end])
        tests = wh.read_frame(con, "SELECT * FROM raw.test_cases WHERE timestamp BETWEEN ? AND ?",
                              [start - timedelta(days=2), end])
        latest_hour = con.execute("SELECT max(hour) FROM signals.service_graph_nodes").fetchone()[0]
        nodes = wh.read_frame(con, "SELECT * FROM signals.service_graph_nodes WHERE hour = ?", [latest_hour]).drop("hour")
        # deployments name the fix a log-absence check starts from (up to 15 minutes after a defect ended)
        deployments = wh.read_frame(con, "SELECT * FROM raw.deployments WHERE timestamp BETWEEN ? AND ?",
                                    [start, end + timedelta(minutes=30)])
        index = writer.write_artifacts(artifacts.folder(), recent, causes, spans, tests, nodes=nodes,
                                       deployments=deployments,
                                       settings=writer.ArtifactSettings(jira_project_key=artifacts.jira_project_key))
        wh.ensure_table(con, "qa.artifacts", writer.ARTIFACTS)
        wh.replace_where(con, "qa.artifacts", index, "defect_id", recent["defect_id"].to_list())
    written = index.filter(pl.col("path").is_not_null())
    per_kind = index.group_by("kind").agg(pl.col("path").is_not_null().sum().alias("written"),
                                          pl.col("path").is_null().sum().alias("not_renderable")).sort("kind")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": written.height, "defects": recent.height,
        "folder": dg.MetadataValue.path(str(artifacts.folder())),
        "per_kind": dg.MetadataValue.md(markdown_table(per_kind)),
    })


def _outbox_metadata(outbox: pl.DataFrame) -> dict:
    counts = delivery.status_counts(outbox)
    held = outbox.filter(pl.col("status") == "held_for_review").sort("defect_id", "tracker")
    troubled = outbox.filter(pl.col("status").is_in(["pending", "failed"]) & pl.col("last_error").is_not_null())
    by_tracker = outbox.group_by("tracker", "status").len().sort("tracker", "status") if outbox.height else None
    return {
        **counts,  # one number per status: pending, delivered, failed, held_for_review, rejected
        "by_tracker": dg.MetadataValue.md(markdown_table(by_tracker) if by_tracker is not None else "no tickets"),
        "held_for_review_tickets": dg.MetadataValue.md(markdown_table(held.select(
            "defect_id", "tracker", "review_reason").head(30)) if held.height else "none"),
        "errors": dg.MetadataValue.md(markdown_table(troubled.select(
            "defect_id", "tracker", "status", "attempts", "last_error").head(20)) if troubled.height else "none"),
    }


@dg.asset(key=TICKET_DELIVERY, group_name=GROUP, kinds={"github", "jira", "duckdb"}, owners=OWNERS,
          deps=[ARTIFACTS, DEFECTS, LANDED_KEYS["ingested_files"]], pool="duckdb",
          automation_condition=AFTER_ANY_HOUR)
def ticket_delivery(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                    artifacts: ArtifactsResource) -> dg.MaterializeResult:
    """File or update one GitHub/Jira ticket per defect via `qa.ticket_outbox`; S1 and unsure ones wait for review."""
    trackers = artifacts.trackers()
    with warehouse.connect() as con:
        outbox = delivery.load_outbox(con)
        if not trackers or not (wh.table_exists(con, "qa.artifacts") and wh.table_exists(con, "defects.defects")):
            note = ("no tracker configured (QA_ASSETS_GITHUB_ISSUES_URL, QA_ASSETS_JIRA_ISSUE_URL): the payloads "
                    "stay files under tickets/" if not trackers else "no ticket payloads yet")
            return dg.MaterializeResult(metadata={"note": note, "dagster/row_count": outbox.height,
                                                  **_outbox_metadata(outbox)})
        tickets = wh.read_frame(con, "SELECT defect_id, kind, path, sha256 FROM qa.artifacts "
                                     "WHERE kind IN ('github_issue', 'jira_issue') AND path IS NOT NULL")
        defects = wh.read_frame(con, "SELECT defect_id, service, defect_type, severity, confidence, status "
                                     "FROM defects.defects")
        verdicts = delivery.review_verdicts(
            defects, _feedback(con), delivery.ReviewPolicy(confidence_below=artifacts.review_confidence_below))
        planned, reviewed = delivery.plan_outbox(outbox, tickets, verdicts, trackers=trackers)
        delivery.save_outbox(con, planned)
        append_decisions(con, delivery.ticket_decisions(reviewed, defects))

    def store(row: dict) -> None:  # each answer is stored at once, so a created issue is never filed twice
        with warehouse.connect() as con:
            delivery.save_outbox(con, [row])

    retry = delivery.RetryPolicy(attempts=artifacts.delivery_attempts, backoff_s=artifacts.delivery_backoff_seconds,
                                 timeout_s=artifacts.delivery_timeout_seconds)
    after, sent = delivery.deliver_outbox(planned, trackers, retry=retry, on_result=store, log=context.log)
    with warehouse.connect() as con:
        delivery.save_outbox(con, after)
        append_decisions(con, delivery.ticket_decisions(sent, defects))
        outbox = delivery.load_outbox(con)
    actions = [event["action"] for event in reviewed + sent]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": outbox.height, "trackers": ", ".join(sorted(trackers)),
        "created": actions.count("created"), "updated": actions.count("updated"),
        "newly_held": actions.count("held"), "newly_rejected": actions.count("rejected"),
        **_outbox_metadata(outbox),
    })


@dg.asset(key=RELEASE_READINESS, group_name=GROUP, kinds={"duckdb"}, owners=OWNERS,
          deps=[DEFECTS, ROOT_CAUSES, SERVICE_WINDOWS, RAW_KEYS["deployments"], RAW_KEYS["test_cases"]], pool="duckdb",
          automation_condition=AFTER_ANY_HOUR)
def release_readiness(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """pass / warn / block per deployed service version, with reasons; proposals go to the decision log."""
    with warehouse.connect() as con:
        deployments = wh.read_table(con, "raw.deployments")
        if deployments.height == 0:
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "note": "no deployments yet"})
        defects = wh.read_table(con, "defects.defects") if wh.table_exists(con, "defects.defects") else None
        causes = wh.read_table(con, "rca.root_causes") if wh.table_exists(con, "rca.root_causes") else None
        first, last = deployments["timestamp"].min(), deployments["timestamp"].max()
        windows = wh.read_frame(con, "SELECT * FROM signals.service_windows WHERE window_start BETWEEN ? AND ?",
                                [first - timedelta(hours=1), last + timedelta(hours=1)])
        tests = wh.read_table(con, "raw.test_cases")
        decided_at = con.execute("SELECT max(window_start) FROM signals.service_windows").fetchone()[0]
        gate = release_gate_lib.release_readiness(
            deployments, defects if defects is not None else pl.DataFrame(schema=writer_defects_schema()),
            causes if causes is not None else pl.DataFrame(schema=rca_schema()), windows, tests,
            decided_at=decided_at)
        wh.ensure_table(con, "qa.release_readiness", release_gate_lib.RELEASE_READINESS)
        wh.replace_where(con, "qa.release_readiness", gate, None)  # rebuilt whole: every version's verdict
        decisions = gate.select(
            pl.concat_str([pl.col("service"), pl.col("version")], separator="@").alias("subject_id"),
            pl.col("decision").alias("outcome"), pl.lit(None, dtype=pl.Float64).alias("confidence"),
            pl.col("reasons").alias("rationale"),
            # A gate never blocks on its own: blocks wait for a person (qa-assets gate approve|override).
            pl.when(pl.col("decision") == "block").then(pl.lit("needs_review")).otherwise(pl.lit("proposed"))
            .alias("status"))
        append_decisions(con, governance.decision_rows(
            decisions, stage="qa_artifacts", decision="release_gate", subject_type="service_version",
            model_name="release_gate", model_version="policy-v1",
            input_row_counts={"raw.deployments": deployments.height, "defects.defects": 0 if defects is None else defects.height}))
    counts = gate.group_by("decision").len().sort("decision")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": gate.height,
        "decisions": dg.MetadataValue.json(dict(zip(counts["decision"], counts["len"], strict=True))),
        "blocked_or_warned": dg.MetadataValue.md(markdown_table(
            gate.filter(pl.col("decision") != "pass").select("service", "version", "decision", "reasons").head(20))),
    })


def writer_defects_schema():
    from qa_assets.lib.defects.grouping import DEFECTS as schema

    return schema


def rca_schema():
    from qa_assets.lib.rca import ROOT_CAUSES as schema

    return schema


@dg.asset(key=KNOWLEDGE_BASE, group_name=GROUP, kinds={"duckdb"}, owners=OWNERS,
          deps=[DEFECTS, ROOT_CAUSES, ARTIFACTS], pool="duckdb",
          automation_condition=AFTER_ANY_HOUR)
def knowledge_base(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Defect → cause → resolution → artifacts, with human corrections from feedback winning."""
    with warehouse.connect() as con:
        if not wh.table_exists(con, "defects.defects"):
            return dg.MaterializeResult(metadata={"dagster/row_count": 0})
        defects = wh.read_table(con, "defects.defects")
        causes = wh.read_table(con, "rca.root_causes")
        index = wh.read_table(con, "qa.artifacts") if wh.table_exists(con, "qa.artifacts") else None
        kb = build_knowledge_base(defects, causes, _feedback(con), index,
                                   deployments=wh.read_table(con, "raw.deployments"))
        wh.ensure_table(con, "qa.knowledge_base", KB_SCHEMA)
        wh.replace_where(con, "qa.knowledge_base", kb, None)  # rebuilt whole from every defect
    return dg.MaterializeResult(metadata={
        "dagster/row_count": kb.height,
        "preview": dg.MetadataValue.md(markdown_table(kb.select(
            "service", "defect_type", "cause_service", "cause_kind", "resolution").head(15))),
    })


@dg.asset(key=QA_REPORT, group_name=GROUP, kinds={"markdown", "html", "matplotlib"}, owners=OWNERS,
          deps=[KNOWLEDGE_BASE, RELEASE_READINESS, ARTIFACTS, ANOMALIES, GRAPH_NODES, GRAPH_EDGES,
                RAW_KEYS["deployments"]], pool="duckdb", automation_condition=AFTER_ANY_HOUR)
def qa_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
              artifacts: ArtifactsResource) -> dg.MaterializeResult:
    """The QA report (HTML and markdown): KPIs, plots, release gate, review queue, defects and artifacts."""
    with warehouse.connect(read_only=True) as con:
        if not wh.table_exists(con, "defects.defects"):
            return dg.MaterializeResult(metadata={"note": "no defects yet"})
        frames = {name: wh.read_table(con, table) for name, table in (
            ("defects", "defects.defects"), ("release_readiness", "qa.release_readiness"),
            ("knowledge_base", "qa.knowledge_base"), ("artifacts", "qa.artifacts"),
            ("decision_log", "governance.decision_log")) if wh.table_exists(con, table)}
        causes = wh.read_table(con, "rca.root_causes")
        deployments = wh.read_table(con, "raw.deployments")
        tests = wh.read_table(con, "raw.test_cases")
        feedback = _feedback(con)
        generated_at = con.execute("SELECT max(last_seen) FROM defects.defects").fetchone()[0]
        if wh.table_exists(con, "defects.anomalies"):
            # the plot shows the most anomalous services of the last REPORT_SCORES of data, per window
            frames["anomalies"] = wh.read_frame(con, """
                SELECT service, window_start, max(score) AS score, bool_or(is_anomaly) AS is_anomaly
                FROM defects.anomalies
                WHERE window_start >= (SELECT max(window_start) FROM defects.anomalies) - ?
                  AND (signal IS NULL OR signal NOT IN (SELECT unnest(?)))
                GROUP BY service, window_start""", [REPORT_SCORES, list(report_lib.CONTEXT_SIGNALS)])
        if wh.table_exists(con, "signals.service_graph_nodes"):
            latest_hour = con.execute("SELECT max(hour) FROM signals.service_graph_nodes").fetchone()[0]
            frames["graph_nodes"] = wh.read_frame(con, "SELECT * FROM signals.service_graph_nodes WHERE hour = ?",
                                                  [latest_hour])
            if wh.table_exists(con, "signals.service_graph_edges"):
                frames["graph_edges"] = wh.read_frame(
                    con, "SELECT * FROM signals.service_graph_edges WHERE hour = ?", [latest_hour])
    frames.update(root_causes=causes, deployments=deployments)
    figures = report_lib.kpis(frames["defects"], causes, deployments, tests, feedback, artifacts=frames.get("artifacts"))
    report = report_lib.render_report_files(figures, frames, artifacts.folder("report"), generated_at=generated_at)
    queue = governance.review_queue(frames["decision_log"]) if "decision_log" in frames else None
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(report.metadata_markdown),
        "html_path": dg.MetadataValue.path(str(report.html_path)),
        "path": dg.MetadataValue.path(str(report.markdown_path)),
        "plots": dg.MetadataValue.json({name: str(path) for name, path in report.plots.items()}),
        "review_queue": 0 if queue is None else queue.height,
        "kpis": dg.MetadataValue.json(figures),
    })
