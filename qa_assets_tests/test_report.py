"""The QA report: report.html opens on its own (plots embedded, every KPI, the review queue), telemetry
cannot add markup to it, markdown and HTML come from the same sections, and the `qa/report` asset
writes both over a warehouse."""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from qa_assets.lib import artifacts as qa
from qa_assets.lib import governance
from qa_assets.lib import graph as graph_lib
from qa_assets.lib import warehouse as wh
from qa_assets.lib.artifacts import report
from qa_assets.lib.artifacts._common import one_line
from qa_assets.lib.defects.anomalies import ANOMALIES
from qa_assets.lib.defects.grouping import DEFECTS
from qa_assets.lib.ingest.tables import DEPLOYMENTS, TEST_CASES, conform
from qa_assets.lib.rca import ROOT_CAUSES
from qa_assets_tests.test_artifacts import (
    T0,
    assert_inert_markdown,
    cause,
    causes_frame,
    defect,
    defects_frame,
    deployment,
    deployments_frame,
    kpi_fixture,
    no_windows,
)

PAYLOADS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</td></tr></table><h1>injected</h1>",
    "' onmouseover='alert(1)",
    "<!-- comment --> <![CDATA[x]]> &amp; &lt;b&gt;",
    "</style><style>body{display:none}</style>",
    "javascript:alert(1)",
    "line\nbreak\r\n# Injected heading \x00 \u2028",
    "${HOME} $(rm -rf /) $x^{2$ @octocat",  # mathtext for matplotlib, a mention for markdown
)
HOSTILE = " ".join(PAYLOADS)
# Everything the renderer itself writes; anything else in the page came from data.
RENDERER_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "nav", "a", "main",
                 "section", "table", "thead", "tbody", "tr", "th", "td", "strong", "code", "figure", "img",
                 "figcaption", "ul", "li", "details", "summary", "pre", "footer"}
RENDERER_ATTRIBUTES = {"lang", "charset", "name", "content", "id", "href", "src", "alt", "class"}
KPI_NAMES = ("MTTD", "MTTR", "Defect leakage", "Triage accuracy", "Root-cause accuracy", "Regression-test coverage")


class Page(HTMLParser):
    """Tags, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"a comment in the page: {data!r}")

    def unknown_decl(self, data: str) -> None:
        raise AssertionError(f"a declaration in the page: {data!r}")

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


# ------------------------------------------------------------------------------------ builders


def anomalies_frame(services: dict[str, float], *, flagged: tuple[str, ...] = (), minutes: int = 90,
                    signal: str = "error_rate") -> pl.DataFrame:
    """One scored window per service and minute from T0 - 30 min. Every service reaches its peak score once,
    at T0 + 20 min, below the threshold; ``flagged`` services also score it from T0 to T0 + 10 min, anomalous."""
    rows = []
    for service, peak in services.items():
        for minute in range(minutes):
            start = T0 + timedelta(minutes=minute - 30)
            hot = service in flagged and 30 <= minute < 40
            score = peak if hot or minute == 50 else 0.5 + (minute % 3) / 10
            rows.append({"hour": start.replace(minute=0), "window_start": start, "service": service,
                         "detector": "baseline", "signal": signal, "score": score, "is_anomaly": hot})
    return conform(pl.DataFrame(rows), ANOMALIES)


def graph_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    """web → cart → cart-db, web → pay: the latest hour of the service graph."""
    nodes = pl.DataFrame([
        {"node_id": f"service:{name}", "node_type": "service", "name": name, "service": name, "traced": True}
        for name in ("web", "cart", "pay")
    ] + [{"node_id": "datastore:cart-db", "node_type": "datastore", "name": "cart-db", "service": "cart-db"}])
    edges = pl.DataFrame([
        {"source": "service:web", "target": "service:cart", "edge_type": "calls", "call_count": 500, "error_count": 40},
        {"source": "service:web", "target": "service:pay", "edge_type": "calls", "call_count": 200, "error_count": 0},
        {"source": "service:cart", "target": "datastore:cart-db", "edge_type": "calls", "call_count": 900,
         "error_count": 0},
    ])
    return conform(nodes, graph_lib.NODES), conform(edges, graph_lib.EDGES)


def decision(subject_id: str, status: str, at: datetime, *, name: str = "release_gate",
             subject_type: str = "service_version", outcome: str = "block", rationale: str = "CI failed",
             stage: str = "qa_artifacts", model_version: str = "policy-v1") -> pl.DataFrame:
    return governance.decision_rows(
        pl.DataFrame({"subject_id": [subject_id], "outcome": [outcome], "rationale": [rationale],
                      "status": [status]}),
        stage=stage, decision=name, subject_type=subject_type, model_name=name, model_version=model_version,
        input_partitions=[at.isoformat()], decided_at=at, code_version_text="test")


def decision_log(*parts: pl.DataFrame) -> pl.DataFrame:
    return pl.concat(parts) if parts else pl.DataFrame(schema=governance.DECISION_LOG)


def report_inputs(hostile: str | None = None) -> tuple[dict, dict[str, pl.DataFrame]]:
    """The KPIs and every frame the report reads; ``hostile`` goes into each text field from telemetry."""
    defects, deployments, causes, tests, feedback = kpi_fixture()
    evil = hostile or "x"
    if hostile:
        defects = pl.concat([defects, defects_frame(defect(defect_id=hostile, service=hostile, status="open",
                                                           defect_type=hostile, title=hostile))],
                            how="vertical_relaxed")
        causes = pl.concat([causes, causes_frame(cause(hostile, None, hostile, kind=hostile))])
        deployments = pl.concat([deployments, deployments_frame(deployment(hostile, hostile, hostile,
                                                                           T0 - timedelta(minutes=5)))])
    kb = qa.knowledge_base(defects, causes, feedback, None, deployments=deployments)
    gate = qa.release_readiness(deployments, defects, causes, no_windows(), tests, decided_at=T0)
    index = pl.DataFrame({"defect_id": ["a", "c", evil], "kind": ["regression_test", "probe", evil],
                          "path": ["/art/regression_tests/test_a.py", "/art/probes/c.yaml", f"/art/{evil}"]})
    log = decision_log(
        decision("pay@7.1", "needs_review", T0),
        decision(evil, "needs_review", T0 + timedelta(minutes=1), name="classify_defect", subject_type="defect",
                 outcome=evil, rationale=evil, stage="defects"),
        decision("cart@2.0", "proposed", T0),
    )
    nodes, edges = graph_frames()
    frames = {"defects": defects, "root_causes": causes, "release_readiness": gate, "knowledge_base": kb,
              "artifacts": index, "deployments": deployments, "decision_log": log, "graph_nodes": nodes,
              "graph_edges": edges,
              "anomalies": anomalies_frame({"cart": 9.0, "pay": 4.0, "web": 2.0, evil: 7.0}, flagged=("cart", evil))}
    k = qa.kpis(defects, causes, deployments, tests, feedback, artifacts=index)
    return k, frames


# ------------------------------------------------------------------------------------ the page


def test_html_report_is_one_self_contained_page_with_every_kpi_plot_and_the_review_queue(tmp_path: Path):
    k, frames = report_inputs()
    rendered = report.render_report_files(k, frames, tmp_path / "report", generated_at=T0)
    assert rendered.html_path == tmp_path / "report" / "report.html"
    page_text = rendered.html_path.read_text(encoding="utf-8")
    page = Page(page_text)
    assert page_text.startswith("<!DOCTYPE html>") and not page.all("script") and not page.all("link")

    # every plot is embedded: the page opens from anywhere
    images = page.all("img")
    assert set(rendered.plots) == {"defects_over_time", "anomaly_scores", "service_graph", "mttr_distribution"}
    assert len(images) == 4
    for image in images:
        assert image["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(image["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        assert image["alt"]

    text = " ".join(page.text)
    rows = {cells[0]: cells[1] for cells in _table_rows(page_text, "kpis")}
    assert set(rows) == set(KPI_NAMES)
    assert rows["MTTD"].startswith("15.0 min") and rows["MTTR"].startswith("60.0 min")
    assert rows["Defect leakage"] == "50.0%" and rows["Triage accuracy"] == "50.0%"
    assert rows["Regression-test coverage"] == "25.0%"  # a's regression test of 4 defects

    # the review queue: the blocked version waits, the proposed one does not
    queue = _table_rows(page_text, "review-queue")
    assert [row[3] for row in queue] == ["service_version:pay@7.1", "defect:x"]  # the longest waiting first
    assert "cart@2.0" not in " ".join(" ".join(r) for r in queue)
    assert "qa-assets gate approve|override" in text
    # release gate, defects, artifacts with links relative to the report
    assert "block" in " ".join(" ".join(r) for r in _table_rows(page_text, "release-readiness"))
    assert {r[0] for r in _table_rows(page_text, "defects")} >= {"a", "b", "c", "f"}
    hrefs = [a["href"] for a in page.all("a")]
    assert any(h.startswith("../") and h.endswith("/art/regression_tests/test_a.py") for h in hrefs)
    assert "root cause of open defects: web (1)" in text  # c is open, blamed on web

    # the markdown has the same sections, plots linked beside it
    markdown = rendered.markdown_path.read_text(encoding="utf-8")
    assert re.findall(r"(?m)^## (.+)$", markdown) == [
        t for t in re.findall(r"<h2>(.*?)</h2>", page_text) if t != "KPIs as JSON"]
    for name in rendered.plots:
        assert f"](plots/{name}.png)" in markdown
    assert "service\\_version:pay@\u2060" in markdown  # the review queue, mentions defanged


def _table_rows(page_text: str, section: str) -> list[list[str]]:
    """The body rows of the first table in a section, as cell texts."""
    body = re.search(rf'<section id="{section}">(.*?)</section>', page_text, re.S).group(1)
    table = re.search(r"<tbody>(.*?)</tbody>", body, re.S).group(1)
    return [[html.unescape(c) for c in re.findall(r"<td(?: class=\"long\")?>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


@pytest.mark.parametrize("payload", [*PAYLOADS, HOSTILE])
def test_telemetry_cannot_add_markup_to_the_page(tmp_path: Path, payload: str):
    k, frames = report_inputs(payload)
    rendered = report.render_report_files(k, frames, tmp_path, generated_at=T0, title=payload)
    page_text = rendered.html_path.read_text(encoding="utf-8")
    page = Page(page_text)
    assert {tag for tag, _ in page.tags} <= RENDERER_TAGS
    assert {name for _, attrs in page.tags for name in attrs} <= RENDERER_ATTRIBUTES
    assert not [a for _, attrs in page.tags for a in attrs if a.startswith("on")]
    assert len(page.all("style")) == 1 and len(page.all("h1")) == 1
    for attrs in page.all("a"):
        assert attrs["href"].startswith("#") or ":" not in attrs["href"].split("/")[0], attrs["href"]
    # the values are there, as text
    assert one_line(payload) in re.sub(r"\s+", " ", " ".join(page.text))
    assert all(src.startswith("data:image/png;base64,") for src in (i["src"] for i in page.all("img")))
    # the same sections as markdown stay inert too
    assert_inert_markdown(rendered.markdown_path.read_text(encoding="utf-8"))
    assert_inert_markdown(rendered.metadata_markdown)


def test_report_without_optional_inputs_says_what_is_missing(tmp_path: Path):
    defects, deployments, causes, tests, feedback = kpi_fixture()
    k = qa.kpis(defects, causes, deployments, tests, feedback)
    rendered = report.render_report_files(k, {"defects": defects}, tmp_path, generated_at=T0)
    text = " ".join(Page(rendered.html_path.read_text(encoding="utf-8")).text)
    for said in ("No scored windows.", "No service graph yet.", "No deployed versions were assessed.",
                 "No decision log yet.", "No artifacts were generated."):
        assert said in text
    assert set(rendered.plots) == {"defects_over_time", "mttr_distribution"}
    empty_log = report.render_report_files(k, {"defects": defects, "decision_log": decision_log()}, tmp_path)
    assert "No decision is waiting for review." in empty_log.html_path.read_text(encoding="utf-8")


def test_metadata_markdown_inlines_plots_only_within_its_budget(tmp_path: Path):
    k, frames = report_inputs()
    everything = report.render_report_files(k, frames, tmp_path, generated_at=T0, metadata_budget=5_000_000)
    assert everything.metadata_markdown.count("](data:image/png;base64,") == 4
    assert "](plots/" not in everything.metadata_markdown  # a local path cannot load in the Dagster UI
    plain = report.render_report_files(k, frames, tmp_path, generated_at=T0, metadata_budget=20_000)
    assert len(plain.metadata_markdown) <= 20_000
    assert "data:image" not in plain.metadata_markdown and "*Plot `plots/anomaly_scores.png`" in plain.metadata_markdown
    tiny = report.render_report_files(k, frames, tmp_path, generated_at=T0, metadata_budget=2_000)
    assert len(tiny.metadata_markdown) <= 2_000 and "cut to fit the asset metadata" in tiny.metadata_markdown


# ------------------------------------------------------------------------------------ plots


def test_anomaly_plot_keeps_the_most_anomalous_services_and_leaves_out_traffic(tmp_path: Path):
    scores = pl.concat([
        anomalies_frame({f"svc-{i}": float(i) for i in range(10)}, flagged=("svc-2", "svc-3")),
        anomalies_frame({"svc-0": 99.0}, flagged=("svc-0",), signal="requests"),  # traffic: context only
    ])
    series, total, every = report.anomaly_score_series(scores, top_n=4)
    assert total == 10 and every == "1m"
    # flagged services first (by their peak), then the highest peaks
    assert series.group_by("service").agg(pl.col("score").max()).sort("score", descending=True)[
        "service"].to_list() == ["svc-9", "svc-8", "svc-3", "svc-2"]
    assert series.filter(pl.col("service") == "svc-3")["is_anomaly"].sum() == 10
    assert series["score"].max() == 9.0  # the traffic score of 99 is not drawn
    long = anomalies_frame({"a": 3.0}, minutes=3 * 24 * 60)
    assert report.anomaly_score_series(long)[2] == "15m"  # a few hundred points per line, not thousands

    deployments = deployments_frame(*(deployment(f"d{i}", "svc-9", f"1.{i}", T0 + timedelta(minutes=i))
                                      for i in range(30)))
    path = report.plot_anomaly_scores(scores, deployments, tmp_path / "scores.png", top_n=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only_traffic = anomalies_frame({"a": 5.0}, signal="requests")
    assert report.plot_anomaly_scores(only_traffic, deployments, tmp_path / "none.png") is None


def test_service_graph_rings_the_root_causes_of_open_defects_only(tmp_path: Path):
    defects = defects_frame(defect(defect_id="open", status="open"), defect(defect_id="again", status="regression"),
                            defect(defect_id="done", status="resolved"))
    causes = causes_frame(cause("open", None, "cart"), cause("open", None, "web", rank=2),
                          cause("again", None, "cart"), cause("done", None, "pay"))
    assert report.root_cause_services(defects, causes) == {"cart": 2}
    nodes, edges = graph_frames()
    plain = report.plot_service_graph(nodes, edges, [], tmp_path / "plain.png")
    ringed = report.plot_service_graph(nodes, edges, ["cart"], tmp_path / "ringed.png")
    assert plain.read_bytes() != ringed.read_bytes()
    assert report.plot_service_graph(None, None, ["cart"], tmp_path / "none.png") is None


# ------------------------------------------------------------------------------------ review queue


def test_review_queue_holds_decisions_whose_latest_status_is_needs_review():
    log = decision_log(
        decision("pay@7.1", "needs_review", T0),  # waits
        decision("cart@2.0", "needs_review", T0),  # approved afterwards
        decision("cart@2.0", "approved", T0 + timedelta(minutes=5), name="release_gate_approve", stage="qa_artifacts",
                 model_version="ann"),
        decision("web@3.0", "needs_review", T0),  # decided again later with confidence
        decision("web@3.0", "proposed", T0 + timedelta(hours=1)),
        decision("d-1", "needs_review", T0, name="classify_defect", subject_type="defect", stage="defects"),
        decision("d-1", "approved", T0 + timedelta(minutes=1), name="review_defect", subject_type="defect",
                 stage="feedback"),  # a person confirmed it
        decision("d-2", "applied", T0 - timedelta(hours=1), name="review_defect", subject_type="defect",
                 stage="feedback"),
        decision("d-2", "needs_review", T0, name="rank_root_cause", subject_type="defect",
                 stage="root_causes"),  # decided after the last review: waits again
    )
    queue = governance.review_queue(log)
    assert queue.schema == pl.Schema(governance.DECISION_LOG)
    assert list(zip(queue["decision"], queue["subject_id"], strict=True)) == [
        ("rank_root_cause", "d-2"), ("release_gate", "pay@7.1")]
    assert governance.review_queue(decision_log()).height == 0
    with pytest.raises(governance.GovernanceInputError, match="decision_log lacks column"):
        governance.review_queue(pl.DataFrame({"status": ["needs_review"]}))


# ------------------------------------------------------------------------------------ the asset


def test_report_asset_writes_html_and_markdown_and_puts_them_in_its_metadata(tmp_path: Path):
    from qa_assets.defs.qa_artifacts.assets import qa_report
    from qa_assets.defs.resources import ArtifactsResource, WarehouseResource

    k, frames = report_inputs()
    warehouse = tmp_path / "warehouse.duckdb"
    nodes, edges = graph_frames()
    hour = pl.lit(T0, dtype=pl.Datetime("us")).alias("hour")
    tables = {
        "defects.defects": (conform(frames["defects"], DEFECTS), DEFECTS),
        "rca.root_causes": (frames["root_causes"], ROOT_CAUSES),
        "raw.deployments": (frames["deployments"], DEPLOYMENTS),
        "raw.test_cases": (pl.DataFrame(schema=TEST_CASES), TEST_CASES),
        "governance.decision_log": (frames["decision_log"], governance.DECISION_LOG),
        "defects.anomalies": (frames["anomalies"].with_columns(hour), {**ANOMALIES, "hour": pl.Datetime("us")}),
        "signals.service_graph_nodes": (nodes.with_columns(hour), {**graph_lib.NODES, "hour": pl.Datetime("us")}),
        "signals.service_graph_edges": (edges.with_columns(hour), {**graph_lib.EDGES, "hour": pl.Datetime("us")}),
    }
    with wh.connect(warehouse) as con:
        for table, (frame, schema) in tables.items():
            wh.ensure_table(con, table, schema)
            wh.insert(con, table, conform(frame, schema))
    result = qa_report(dg.build_asset_context(), warehouse=WarehouseResource(path=str(warehouse)),
                       artifacts=ArtifactsResource(path=str(tmp_path / "artifacts")))
    metadata = result.metadata
    html_path = Path(metadata["html_path"].path)
    assert html_path == tmp_path / "artifacts" / "report" / "report.html"
    assert len(Page(html_path.read_text(encoding="utf-8")).all("img")) == 4
    assert Path(metadata["path"].path).name == "report.md"
    assert metadata["review_queue"] == 2
    assert "## Review queue" in metadata["report"].value
    assert len(metadata["report"].value) <= report.METADATA_BUDGET
    assert "](data:image/png;base64," in metadata["report"].value
    assert metadata["kpis"].data["mttd_minutes"]["n"] == 2
