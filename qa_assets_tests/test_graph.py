"""The service knowledge graph: call edges from spans, nodes from the catalog, metrics, deployments and
log templates, the table round trip, GraphML / node-link files, the query functions and the picture."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import networkx as nx
import polars as pl
import pytest

from qa_assets.lib import graph as g
from qa_assets.lib.ingest.tables import CATALOG, DEPLOYMENTS, SPANS, conform

T0 = datetime(2026, 3, 4, 10, 0)


# ----------------------------------------------------------------------------------- builders


def span(trace: str, span_id: str, service: str, kind: str, *, parent: str | None = None, ms: float = 10.0,
         at: int = 0, status: str = "UNSET", http: int | None = None, peer: str | None = None,
         db: str | None = None, version: str | None = None) -> dict:
    start = T0 + timedelta(seconds=at)
    return {
        "hour": start.replace(minute=0, second=0), "trace_id": trace, "span_id": span_id,
        "parent_span_id": parent,
        "service": service, "service_version": version, "name": f"{kind.lower()} {service}", "kind": kind,
        "start_time": start, "end_time": start + timedelta(milliseconds=ms), "duration_ms": ms,
        "status_code": status, "http_status_code": http, "peer_service": peer or db, "db_system": db,
    }


def spans_frame(rows: list[dict]) -> pl.DataFrame:
    return conform(pl.DataFrame(rows, infer_schema_length=None), SPANS)


def shop_spans() -> pl.DataFrame:
    """frontend calls cart (instrumented), cart calls a postgres `orders-db`, frontend calls an
    uninstrumented `payment-gw` and publishes to a broker `events-bus` that `mailer` consumes from."""
    rows = [
        # t1: frontend -> cart -> orders-db; frontend -> payment-gw (no spans of its own)
        span("t1", "a1", "frontend", "SERVER", at=0, ms=100, version="2.0"),
        span("t1", "a2", "frontend", "CLIENT", parent="a1", at=1, ms=12, peer="cart"),
        span("t1", "a3", "cart", "SERVER", parent="a2", at=1, ms=10, version="1.1"),
        span("t1", "a4", "cart", "CLIENT", parent="a3", at=1, ms=2, db="postgresql", peer="orders-db"),
        span("t1", "a5", "frontend", "CLIENT", parent="a1", at=2, ms=40, peer="payment-gw"),
        # t2: the cart call fails with a 500 on both sides
        span("t2", "b1", "frontend", "SERVER", at=10, ms=100),
        span("t2", "b2", "frontend", "CLIENT", parent="b1", at=11, ms=22, status="ERROR", http=500, peer="cart"),
        span("t2", "b3", "cart", "SERVER", parent="b2", at=11, ms=20, status="ERROR", http=500),
        # t3: frontend addresses cart by IP; the child span shows which service that IP is
        span("t3", "c1", "frontend", "SERVER", at=20, ms=100),
        span("t3", "c2", "frontend", "CLIENT", parent="c1", at=21, ms=32, peer="10.0.0.7:8080"),
        span("t3", "c3", "cart", "SERVER", parent="c2", at=21, ms=30),
        # t4: the same IP refuses the connection: only the caller saw this call
        span("t4", "d1", "frontend", "SERVER", at=30, ms=100),
        span("t4", "d2", "frontend", "CLIENT", parent="d1", at=31, ms=1, status="ERROR", peer="10.0.0.7:8080"),
        # t5: frontend publishes to a broker; mailer consumes the message
        span("t5", "e1", "frontend", "SERVER", at=40, ms=100),
        span("t5", "e2", "frontend", "PRODUCER", parent="e1", at=41, ms=3, peer="events-bus"),
        span("t5", "e3", "mailer", "CONSUMER", parent="e2", at=42, ms=50),
        # an outbound call to a Kubernetes service DNS name of a service without spans
        span("t6", "f1", "frontend", "SERVER", at=50, ms=100),
        span("t6", "f2", "frontend", "CLIENT", parent="f1", at=51, ms=5, peer="inventory.shop.svc.cluster.local"),
    ]
    frame = spans_frame(rows)
    # An exporter retried a batch: cart's first server span arrived twice. It is still one call.
    return pl.concat([frame, frame.filter(pl.col("span_id") == "a3")])


def catalog_frame() -> pl.DataFrame:
    rows = [
        {"entity_ref": "component:default/frontend", "kind": "component", "name": "frontend", "owner": "team-web",
         "system": "shop", "tier": "1", "lifecycle": "production", "type": "website",
         "depends_on": ["component:default/cart"]},
        {"entity_ref": "component:default/cart", "kind": "component", "name": "cart", "owner": "team-cart",
         "system": "shop", "tier": "1", "lifecycle": "production", "type": "service",
         "depends_on": ["resource:default/orders-db", "component:default/ledger"]},
        # ledger has no spans and no callers in the traces: known only from the catalog and its metrics
        {"entity_ref": "component:default/ledger", "kind": "component", "name": "ledger", "owner": "team-finance",
         "system": "books", "tier": "2", "lifecycle": "production", "type": "service",
         "depends_on": ["resource:default/orders-db"]},
        {"entity_ref": "resource:default/orders-db", "kind": "resource", "name": "orders-db", "owner": "team-dba",
         "system": "shop", "tier": "1", "lifecycle": "production", "type": "database", "depends_on": []},
    ]
    return conform(pl.DataFrame(rows), CATALOG)


def deployments_frame() -> pl.DataFrame:
    rows = [
        {"event_id": "ev-front", "event_type": "deployed", "timestamp": T0 - timedelta(minutes=120),
         "service": "frontend", "version": "2.0", "change_kind": "code", "commit": "f00d",
         "changed_files": ["web/app.ts"], "previous_version": "1.9"},
        {"event_id": "ev-cart-11", "event_type": "deployed", "timestamp": T0 - timedelta(minutes=30),
         "service": "cart", "version": "1.1", "change_kind": "code", "commit": "abc123",
         "changed_files": ["cart/service.py", "cart/db.py"], "previous_version": "1.0"},
        {"event_id": "ev-cart-cfg", "event_type": "deployed", "timestamp": T0 - timedelta(minutes=10),
         "service": "cart", "version": "cfg-77", "change_kind": "config", "commit": "c0ffee",
         "changed_files": ["deploy/cart/values.yaml"], "previous_version": "1.1"},
        # search ran 3.0, then was taken out of service
        {"event_id": "ev-search-3", "event_type": "deployed", "timestamp": T0 - timedelta(minutes=200),
         "service": "search", "version": "3.0", "change_kind": "code", "commit": "5ea"},
        {"event_id": "ev-search-gone", "event_type": "removed", "timestamp": T0 - timedelta(minutes=60),
         "service": "search", "version": None, "change_kind": "code"},
        {"event_id": "ev-cart-back", "event_type": "rolledback", "timestamp": T0 - timedelta(minutes=5),
         "service": "cart", "version": "1.0", "change_kind": "code", "commit": "0ld", "previous_version": "1.1"},
    ]
    frame = pl.DataFrame(rows, schema_overrides={"changed_files": pl.List(pl.String)})
    return conform(frame.with_columns(pl.col("timestamp").dt.truncate("1h").alias("hour")), DEPLOYMENTS)


def templates_frame() -> pl.DataFrame:
    return pl.DataFrame({
        "service": ["cart", "cart", "frontend", "cart"],
        "template_id": ["tpl-err", "tpl-req", "tpl-req", "tpl-err"],
        "template": ["db timeout after <*> ms", "\x1b[32mrequest <*> done\x1b[0m", "\x1b[32mrequest <*> done\x1b[0m",
                     "db timeout after <*> ms"],
        "level": ["ERROR", "INFO", "INFO", "WARN"],
        "count": [5, 100, 50, 2],
    })


def metric_services_frame() -> pl.DataFrame:
    return pl.DataFrame({"service": ["frontend", "cart", "ledger", "orders-db"]})


@pytest.fixture(scope="module")
def spans() -> pl.DataFrame:
    return shop_spans()


@pytest.fixture(scope="module")
def edges(spans: pl.DataFrame) -> pl.DataFrame:
    return g.call_edges(spans)


@pytest.fixture(scope="module")
def graph(spans: pl.DataFrame, edges: pl.DataFrame) -> nx.MultiDiGraph:
    return g.build_graph(spans_edges=edges, catalog=catalog_frame(), deployments=deployments_frame(),
                         service_templates=templates_frame(), metric_services=metric_services_frame(),
                         span_services=g.span_services(spans))


def edge_row(edges: pl.DataFrame, caller: str, callee: str) -> dict:
    rows = edges.filter((pl.col("caller") == caller) & (pl.col("callee") == callee)).to_dicts()
    assert len(rows) == 1, f"expected one edge {caller}->{callee}, got {edges.select('caller', 'callee').rows()}"
    return rows[0]


# ---------------------------------------------------------------------------------- call edges


def test_call_edges_combine_the_callee_and_the_caller_view(edges: pl.DataFrame) -> None:
    assert edges.schema == pl.Schema(g.CALL_EDGES)
    cart = edge_row(edges, "frontend", "cart")
    # cart's server spans: t1 (delivered twice, counted once), t2, t3; the caller also saw t4, which
    # never arrived (connection refused to the IP that t3 shows is cart)
    assert cart["call_count"] == 4
    assert cart["error_count"] == 2  # t2's 500 and t4's refused connection
    assert cart["observed_from"] == "both"
    assert cart["callee_type"] == "service" and cart["callee_traced"] is True
    # latency from cart's own server spans (10, 20, 30 ms), not the client spans
    assert cart["latency_p50_ms"] == pytest.approx(20.0)
    assert cart["first_seen"] == T0 + timedelta(seconds=1)
    assert cart["last_seen"] == T0 + timedelta(seconds=31)
    consumer = edge_row(edges, "frontend", "mailer")
    assert (consumer["call_count"], consumer["observed_from"]) == (1, "callee")


def test_callees_without_spans_are_datastores_brokers_or_blind_spots(edges: pl.DataFrame) -> None:
    db = edge_row(edges, "cart", "orders-db")
    assert (db["callee_type"], db["callee_traced"], db["db_system"]) == ("datastore", False, "postgresql")
    assert db["observed_from"] == "caller" and db["latency_p50_ms"] == pytest.approx(2.0)
    broker = edge_row(edges, "frontend", "events-bus")  # a producer's peer is the broker, not the consumer
    assert broker["callee_type"] == "datastore"
    gateway = edge_row(edges, "frontend", "payment-gw")
    assert (gateway["callee_type"], gateway["callee_traced"], gateway["call_count"]) == ("service", False, 1)
    assert edge_row(edges, "frontend", "inventory")["callee_type"] == "service"
    # the IP address resolved to cart: no node for it
    assert "10.0.0.7:8080" not in edges["callee"].to_list()
    assert edges.filter(pl.col("caller") == pl.col("callee")).height == 0


def test_peer_names_normalize_ports_and_kubernetes_dns() -> None:
    assert g.normalize_peer("cart.shop.svc.cluster.local:8080") == "cart"
    assert g.normalize_peer("cart.shop.svc") == "cart"
    assert g.normalize_peer("api.stripe.com:443") == "api.stripe.com"  # an external host stays itself
    assert g.normalize_peer("10.1.2.3") == "10.1.2.3"


def test_call_edges_of_no_spans_is_empty_and_missing_columns_are_named() -> None:
    assert g.call_edges(pl.DataFrame(schema=SPANS)).schema == pl.Schema(g.CALL_EDGES)
    with pytest.raises(g.GraphInputError, match="parent_span_id"):
        g.call_edges(pl.DataFrame({"trace_id": ["t"], "span_id": ["s"]}))


def test_request_calls_count_the_requests_that_called_each_dependency_and_failed() -> None:
    # shop_spans, plus a failed frontend request two minutes later that called nothing
    late = spans_frame([span("t7", "g1", "frontend", "SERVER", at=130, status="ERROR", http=503)])
    rows = g.request_calls(pl.concat([shop_spans(), late]))
    assert rows.schema == pl.Schema(g.REQUEST_CALLS)
    got = {(r["window_start"].minute, r["caller"], r["callee"]):
           (r["requests"], r["failed"], r["requests_calling"], r["failed_calling"]) for r in rows.iter_rows(named=True)}
    assert got == {
        # cart: t1-t3 seen from cart, t4 only from frontend's call to cart's IP; mailer behind the broker
        (0, "frontend", "cart"): (6, 0, 4, 0),
        (0, "frontend", "payment-gw"): (6, 0, 1, 0),
        (0, "frontend", "events-bus"): (6, 0, 1, 0),
        (0, "frontend", "mailer"): (6, 0, 1, 0),
        (0, "frontend", "inventory"): (6, 0, 1, 0),
        # cart's first span arrived twice: still one request; t2 failed at cart without calling the db
        (0, "cart", "orders-db"): (3, 1, 1, 0),
        # the failed request of minute 2 called nothing: every dependency gets the window, with no calls
        **{(2, "frontend", callee): (1, 1, 0, 0) for callee in ("cart", "payment-gw", "events-bus", "mailer",
                                                                  "inventory")},
    }


def test_request_calls_of_no_spans_is_empty_and_a_bad_window_is_named() -> None:
    assert g.request_calls(pl.DataFrame(schema=SPANS)).schema == pl.Schema(g.REQUEST_CALLS)
    with pytest.raises(g.GraphInputError, match="window_minutes"):
        g.request_calls(shop_spans(), window_minutes=7)


def test_graph_problems_name_dangling_edges_untyped_nodes_and_self_loops(graph: nx.MultiDiGraph) -> None:
    nodes, edges = g.graph_tables(graph)
    assert g.graph_problems(nodes, edges) == []
    loop = edges.filter(pl.col("edge_type") == "calls").head(1).with_columns(pl.col("source").alias("target"))
    dangling = edges.head(1).with_columns(pl.lit("service:ghost").alias("target"))
    untyped = nodes.head(1).with_columns(pl.lit("service:odd").alias("node_id"), pl.lit(None, pl.String).alias("node_type"))
    problems = g.graph_problems(pl.concat([nodes, untyped]), pl.concat([edges, loop, dangling]))
    source = loop["source"][0]
    assert problems == [
        f"{dangling['edge_type'][0]} edge {dangling['source'][0]} -> service:ghost: its target is not a node",
        "node service:odd has no known type (None)",
        f"calls self-loop on {source}",
    ]


def test_request_calls_problems_name_counts_that_cannot_be() -> None:
    rows = g.request_calls(shop_spans())
    assert g.request_calls_problems(rows) == []
    bad = rows.head(1).with_columns(pl.col("requests") + 0, (pl.col("requests") + 1).alias("failed"))
    assert len(g.request_calls_problems(pl.concat([rows, bad]))) == 1


def test_merging_partitions_adds_counts_like_one_pass(spans: pl.DataFrame, edges: pl.DataFrame) -> None:
    early = spans.filter(pl.col("trace_id").is_in(["t1", "t2", "t5"]))
    late = spans.filter(~pl.col("trace_id").is_in(["t1", "t2", "t5"]))
    merged = g.merge_call_edges([g.call_edges(early), g.call_edges(late)])
    columns = ["caller", "callee", "callee_type", "call_count", "error_count", "first_seen", "last_seen"]
    assert merged.select(columns).equals(edges.select(columns))
    assert merged.schema == pl.Schema(g.CALL_EDGES)
    services = g.merge_span_services([g.span_services(early), g.span_services(late)])
    assert services.equals(g.span_services(spans))


# ------------------------------------------------------------------------------------- nodes


def test_every_source_contributes_nodes(graph: nx.MultiDiGraph) -> None:
    nodes, _ = g.graph_tables(graph)
    by_id = {r["node_id"]: r for r in nodes.to_dicts()}
    cart = by_id["service:cart"]
    assert (cart["traced"], cart["in_catalog"], cart["owner"], cart["tier"]) == (True, True, "team-cart", "1")
    assert cart["version"] == "1.0"  # rolled back last; the config change does not change the build
    # blind spot known only from the catalog and metrics
    ledger = by_id["service:ledger"]
    assert (ledger["traced"], ledger["in_catalog"], ledger["system"]) == (False, True, "books")
    assert json.loads(ledger["attributes"])["sources"] == ["catalog", "catalog_dependency", "metrics"]
    # known only from deployments, and removed: no version runs any more, and the node says since when
    search = by_id["service:search"]
    assert (search["version"], search["traced"], search["in_catalog"]) == (None, False, False)
    removed_at = json.loads(search["attributes"])["removed_at"]
    assert datetime.fromisoformat(removed_at) == (T0 - timedelta(minutes=60)).replace(tzinfo=timezone.utc)
    # a catalog Resource reached through a database client is a datastore, not a service
    assert by_id["datastore:orders-db"]["node_type"] == "datastore" and "service:orders-db" not in by_id
    assert json.loads(by_id["datastore:orders-db"]["attributes"])["db_system"] == "postgresql"
    gateway = by_id["service:payment-gw"]
    assert (gateway["traced"], gateway["in_catalog"]) == (False, False)
    assert by_id["service:mailer"]["traced"] is True
    assert g.blind_spots(graph) == ["inventory", "ledger", "payment-gw", "search"]


def test_deployments_become_versions_and_changes(graph: nx.MultiDiGraph) -> None:
    change = graph.nodes["change:ev-cart-11"]
    assert (change["node_type"], change["commit"], change["changed_files"]) == (
        "change", "abc123", ["cart/service.py", "cart/db.py"])
    assert graph.has_edge("service:cart", "version:cart@1.1", "runs_version")
    assert graph.has_edge("version:cart@1.1", "change:ev-cart-11", "changed_by")
    assert graph.has_edge("version:cart@1.0", "change:ev-cart-back", "changed_by")
    # a config change hangs off the service: it changed no build
    assert graph.has_edge("service:cart", "change:ev-cart-cfg", "changed_by")
    assert "version:cart@cfg-77" not in graph
    # a removal has no version: it hangs off the service
    assert graph.has_edge("service:search", "change:ev-search-gone", "changed_by")
    assert graph.has_edge("version:search@3.0", "change:ev-search-3", "changed_by")
    assert graph.nodes["change:ev-cart-cfg"]["change_kind"] == "config"


def test_templates_hang_off_the_services_that_emit_them(graph: nx.MultiDiGraph) -> None:
    error = graph.edges["service:cart", "template:tpl-err", "emits"]
    assert (error["call_count"], error["error_count"], error["evidence"]) == (7, 5, "logs")
    assert json.loads(graph.nodes["template:tpl-err"]["attributes"])["level"] == "ERROR"
    assert graph.nodes["template:tpl-err"]["service"] == "cart"
    shared = graph.nodes["template:tpl-req"]
    assert shared["service"] is None and json.loads(shared["attributes"])["services"] == ["cart", "frontend"]
    assert graph.has_edge("service:frontend", "template:tpl-req", "emits")


def test_catalog_depends_on_and_calls_are_separate_edges(graph: nx.MultiDiGraph) -> None:
    assert graph.has_edge("service:cart", "datastore:orders-db", "calls")
    assert graph.has_edge("service:cart", "datastore:orders-db", "depends_on")
    assert graph.edges["service:cart", "service:ledger", "depends_on"]["evidence"] == "catalog"
    assert not graph.has_edge("service:cart", "service:ledger", "calls")


def test_bad_inputs_name_the_frame_and_the_column(edges: pl.DataFrame) -> None:
    with pytest.raises(g.GraphInputError, match=r"catalog lacks column\(s\) depends_on"):
        g.build_graph(spans_edges=edges, catalog=catalog_frame().drop("depends_on"), deployments=None,
                      service_templates=None, metric_services=None)
    with pytest.raises(g.GraphInputError, match="spans_edges"):
        g.build_graph(spans_edges=pl.DataFrame({"caller": ["a"]}), catalog=None, deployments=None,
                      service_templates=None, metric_services=None)


def test_catalog_alone_still_gives_a_graph() -> None:
    graph = g.build_graph(spans_edges=pl.DataFrame(schema=g.CALL_EDGES), catalog=catalog_frame(),
                          deployments=None, service_templates=None, metric_services=None)
    assert g.dependencies(graph, "cart") == ["ledger", "orders-db"]
    assert g.blind_spots(graph) == ["cart", "frontend", "ledger"]


# ---------------------------------------------------------------------------- tables and files


def test_tables_conform_and_round_trip(graph: nx.MultiDiGraph) -> None:
    nodes, edges = g.graph_tables(graph)
    assert nodes.schema == pl.Schema(g.NODES) and edges.schema == pl.Schema(g.EDGES)
    assert nodes["node_id"].is_unique().all()
    assert set(nodes["node_type"]) <= set(g.NODE_TYPES) and set(edges["edge_type"]) <= set(g.EDGE_TYPES)
    assert set(edges["source"]) | set(edges["target"]) <= set(nodes["node_id"])
    again = g.graph_from_tables(nodes, edges)
    nodes2, edges2 = g.graph_tables(again)
    assert nodes2.equals(nodes) and edges2.equals(edges)
    assert g.blast_radius(again, "orders-db") == g.blast_radius(graph, "orders-db")


def test_graphml_and_node_link_json_are_readable_by_networkx(graph: nx.MultiDiGraph, tmp_path: Path) -> None:
    graphml = g.write_graphml(graph, tmp_path / "graph.graphml")
    read = nx.read_graphml(graphml, force_multigraph=True)
    assert read.number_of_nodes() == graph.number_of_nodes()
    assert read.number_of_edges() == graph.number_of_edges()
    change = read.nodes["change:ev-cart-11"]
    assert json.loads(change["changed_files"]) == ["cart/service.py", "cart/db.py"]
    assert datetime.fromisoformat(change["timestamp"]) == T0 - timedelta(minutes=30)
    assert read.nodes["service:ledger"]["traced"] is False
    # XML cannot hold the ANSI escape of the template: it is replaced, the rest of the text is kept
    assert read.nodes["template:tpl-req"]["name"] == "\ufffd[32mrequest <*> done\ufffd[0m"

    path = g.write_node_link_json(graph, tmp_path / "graph.json")
    plain = nx.node_link_graph(json.loads(path.read_text()), edges="edges")
    assert plain.number_of_edges() == graph.number_of_edges()
    back = g.read_node_link_json(path)
    back_nodes, back_edges = g.graph_tables(back)
    nodes, edges = g.graph_tables(graph)
    assert back_nodes.equals(nodes) and back_edges.equals(edges)


def test_partial_tables_still_give_typed_nodes() -> None:
    edges = pl.DataFrame({"source": ["service:a"], "target": ["datastore:db"], "edge_type": ["calls"]})
    nodes = pl.DataFrame({"node_id": ["service:a"], "node_type": ["service"], "name": ["a"]})
    graph = g.graph_from_tables(nodes, edges)
    assert graph.nodes["datastore:db"]["node_type"] == "datastore"
    assert g.dependencies(graph, "a") == ["db"]


# ------------------------------------------------------------------------------------- queries


def test_dependencies_dependents_blast_radius_and_owners(graph: nx.MultiDiGraph) -> None:
    assert g.dependencies(graph, "frontend") == ["cart", "events-bus", "inventory", "mailer", "payment-gw"]
    assert g.dependencies(graph, "cart") == ["ledger", "orders-db"]
    assert g.dependents(graph, "orders-db") == ["cart", "ledger"]
    # nearest first: cart and ledger use the database, frontend depends on cart
    assert g.blast_radius(graph, "orders-db") == ["cart", "ledger", "frontend"]
    assert g.blast_radius(graph, "frontend") == []
    assert g.owners(graph, "ledger") == {"owner": "team-finance", "system": "books", "tier": "2",
                                         "lifecycle": "production"}
    assert g.owners(graph, "payment-gw")["owner"] is None
    with pytest.raises(g.UnknownServiceError, match="'checkout' is not in the service graph"):
        g.dependencies(graph, "checkout")


def test_recent_changes_near_a_time(graph: nx.MultiDiGraph) -> None:
    near = g.recent_changes(graph, "cart", T0, timedelta(minutes=20))
    assert near.schema == pl.Schema(g.RECENT_CHANGES)
    assert near["change_id"].to_list() == ["ev-cart-back", "ev-cart-cfg"]  # latest first
    assert near["minutes_before"].to_list() == [pytest.approx(5.0), pytest.approx(10.0)]
    assert near.row(0, named=True)["event_type"] == "rolledback"
    assert g.recent_changes(graph, "cart", T0, timedelta(hours=1))["change_id"].to_list() == [
        "ev-cart-back", "ev-cart-cfg", "ev-cart-11"]
    # a window after the moment, and a timezone-aware moment
    after = g.recent_changes(graph, "cart", T0 - timedelta(minutes=40), timedelta(0), timedelta(minutes=15))
    assert after["change_id"].to_list() == ["ev-cart-11"]
    aware = T0.replace(tzinfo=timezone.utc)
    assert g.recent_changes(graph, "cart", aware, timedelta(minutes=20)).height == 2
    with_deps = g.recent_changes(graph, "frontend", T0, timedelta(minutes=20), include_dependencies=True)
    assert set(with_deps["service"]) == {"cart"}
    assert g.recent_changes(graph, "frontend", T0, timedelta(minutes=20)).height == 0


# ------------------------------------------------------------------------------------- picture


def test_render_png_draws_services_and_datastores(graph: nx.MultiDiGraph, tmp_path: Path) -> None:
    import matplotlib.image

    path = g.render_png(graph, tmp_path / "graph.png")
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert 300 <= width <= 1000 and 200 <= height <= 810  # small enough for asset metadata
    assert g.png_markdown(path).startswith("![service graph](data:image/png;base64,iVBOR")
    limited = g.render_png(graph, tmp_path / "small.png", max_nodes=3)
    assert limited.stat().st_size > 0


def test_graph_summary_counts_what_the_graph_holds(graph: nx.MultiDiGraph) -> None:
    summary = g.graph_summary(graph)
    assert summary["nodes"] == graph.number_of_nodes() and summary["edges"] == graph.number_of_edges()
    assert summary["node_types"]["change"] == 6 and summary["node_types"]["template"] == 2
    assert summary["busiest_calls"][0] == {"caller": "frontend", "callee": "cart", "calls": 4}


# ------------------------------------------------------------------------- simulated landing dir


def landing_frames(landing: Path) -> dict[str, pl.DataFrame]:
    """Spans, metrics, deployments and catalog of a landing dir, read with the raw parsers."""
    from qa_assets.lib.ingest.catalog import parse_catalog
    from qa_assets.lib.ingest.cdevents import parse_cdevents
    from qa_assets.lib.ingest.otlp import parse_connection, parse_otlp_lines
    from qa_assets.lib.ingest.reader import ReadState, iter_line_chunks

    con = parse_connection()
    spans, metrics = [], []
    for path in sorted((landing / "otlp").iterdir()):
        for chunk in iter_line_chunks(path, ReadState(), final=True):
            parsed = parse_otlp_lines(con, chunk.lines, str(path))
            spans.append(parsed.spans)
            metrics.append(parsed.metrics)
    con.close()
    deployments = [parse_cdevents(p.read_bytes(), str(p)).accepted
                   for p in sorted((landing / "deployments").iterdir())]
    catalog = [parse_catalog(p.read_bytes(), str(p)).accepted for p in sorted((landing / "catalog").iterdir())]
    return {"spans": pl.concat(spans), "metrics": pl.concat(metrics), "deployments": pl.concat(deployments),
            "catalog": pl.concat(catalog)}


@pytest.mark.slow
def test_simulated_landing_dir_gives_the_whole_topology(tmp_path: Path) -> None:
    from qa_assets.simulate import simulate

    simulate(tmp_path / "landing", topology="shop", hours=0.25, scale="tiny", seed=3)
    frames = landing_frames(tmp_path / "landing")
    spans = frames["spans"]
    graph = g.build_graph(
        spans_edges=g.call_edges(spans), catalog=frames["catalog"], deployments=frames["deployments"],
        service_templates=None, metric_services=frames["metrics"].select("service").unique(),
        span_services=g.span_services(spans),
    )
    nodes, _ = g.graph_tables(graph)
    # every catalog entity is a node of the right type, with its owner
    for entity in frames["catalog"].iter_rows(named=True):
        node_type = "datastore" if entity["kind"] == "resource" else "service"
        node = graph.nodes[f"{node_type}:{entity['name']}"]
        assert node["in_catalog"] and node["owner"] == entity["owner"]
    # every observed call (a client span with a server child in another service) is an edge,
    # computed here without the library's join
    by_id = {(r["trace_id"], r["span_id"]): r for r in spans.iter_rows(named=True)}
    observed = set()
    for child in by_id.values():
        parent = by_id.get((child["trace_id"], child["parent_span_id"]))
        if child["kind"] == "SERVER" and parent and parent["service"] != child["service"]:
            observed.add((parent["service"], child["service"]))
    assert observed, "the simulated traces should contain cross-service calls"
    for caller, callee in observed:
        assert graph.has_edge(f"service:{caller}", f"service:{callee}", "calls"), (caller, callee)
    # database calls reach datastore nodes; services with metrics but no spans are blind spots
    database_calls = spans.filter(pl.col("db_system").is_not_null()).select("service", "peer_service").unique()
    for row in database_calls.rows():
        assert graph.has_edge(f"service:{row[0]}", f"datastore:{row[1]}", "calls"), row
    untraced = set(frames["metrics"]["service"]) - set(spans["service"])
    assert untraced and untraced <= set(nodes.filter(~pl.col("traced").fill_null(False))["name"])
    changes = {node.removeprefix("change:") for node in graph if node.startswith("change:")}
    assert set(frames["deployments"]["event_id"]) == changes
