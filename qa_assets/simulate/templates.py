"""Log message templates per service archetype, as data.

``when`` says what writes the line:
- ``request``: a sampled server request (``routes`` limits it to some endpoints by a path fragment)
- ``background``: each instance, each minute, Poisson with mean ``weight``
- ``degraded``: an optional downstream call failed and the request went on without it
- ``startup`` / ``shutdown`` / ``config`` / ``gc`` / ``oom`` / ``outage``: lifecycle events the world raises
``{name}`` placeholders come from ``identifiers.GENERATORS`` or the request context (method, route, path,
status, duration_ms, callee, noun, nouns, service, version, rev, mb, pct ...). Some templates carry
personal data on purpose: the ingestion must mask it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Template:
    text: str
    level: str = "INFO"
    when: str = "request"
    weight: float = 1.0
    routes: tuple[str, ...] = ()  # path fragments the endpoint route must contain
    component: str = ""  # class / module / file hint, rendered per language

    @property
    def placeholders(self) -> tuple[str, ...]:
        return _placeholders(self.text)


@lru_cache(maxsize=None)
def _placeholders(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"(?<!\{)\{([a-z_0-9]+)\}(?!\})", text))


@lru_cache(maxsize=None)
def percent_format(text: str) -> str:
    """``{name}`` -> ``%s`` in order, escaping literal percent signs, for fast ``tpl % values``."""
    escaped = text.replace("%", "%%")
    return re.sub(r"(?<!\{)\{([a-z_0-9]+)\}(?!\})", "%s", escaped).replace("{{", "{").replace("}}", "}")


T = Template

COMMON: list[Template] = [
    T("Health check passed in {fast_ms} ms", "DEBUG", "background", 0.5, component="HealthIndicator"),
    T(
        "Connection pool stats: active={small}, idle={small}, waiting=0",
        "DEBUG",
        "background",
        0.3,
        component="PoolMonitor",
    ),
    T(
        "Exported {count} metric points to otel-collector:4317 in {fast_ms} ms",
        "DEBUG",
        "background",
        1.0,
        component="MetricExporter",
    ),
    T(
        "Refreshed feature flags from flagd:8013 ({small} flags changed)",
        "INFO",
        "background",
        0.1,
        component="FeatureFlags",
    ),
]

LIFECYCLE: list[Template] = [
    T(
        "Started {service} {version} in {secs} seconds (pid {pid}, host {pod})",
        "INFO",
        "startup",
        component="Application",
    ),
    T("Listening on 0.0.0.0:{service_port} (protocol http/1.1)", "INFO", "startup", component="Server"),
    T(
        "Received SIGTERM, shutting down gracefully ({small} requests in flight)",
        "INFO",
        "shutdown",
        component="Application",
    ),
    T(
        "Configuration reloaded from /etc/{service}/config.yaml (revision {rev})",
        "INFO",
        "config",
        component="ConfigWatcher",
    ),
    T(
        "Heap usage {pct}% of {limit_mb} MiB after collection; pause {ms} ms",
        "WARN",
        "gc",
        component="GcMonitor",
    ),
    T("Memory limit almost reached: rss={mb} MiB limit={limit_mb} MiB", "WARN", "gc", component="GcMonitor"),
]

ARCHETYPES: dict[str, list[Template]] = {
    "storefront": [
        T(
            "served {method} {path} status={status} in {duration_ms}ms",
            "INFO",
            weight=3,
            component="handlers",
        ),
        T(
            "session {session_id} set currency to {currency}",
            "INFO",
            routes=("setCurrency",),
            component="handlers",
        ),
        T("user {email} added {qty} x {sku} to cart", "INFO", routes=("/cart",), component="handlers"),
        T(
            "placing order for {email} ship-to {city} {zip} {country}",
            "INFO",
            routes=("checkout",),
            component="checkout",
        ),
        T(
            "order {order_id} placed, tracking {tracking_id}",
            "INFO",
            routes=("checkout",),
            component="checkout",
        ),
        T(
            "rendered product page {sku} with {small} recommendations",
            "DEBUG",
            routes=("/product",),
            component="render",
        ),
        T("forwarding auth header Authorization: {bearer}", "DEBUG", weight=0.05, component="middleware"),
        T(
            "request from {ip} exceeded soft rate limit ({n} req/s)",
            "WARN",
            weight=0.02,
            component="ratelimit",
        ),
        T("ads unavailable, rendering page without ads: {reason}", "WARN", "degraded", component="handlers"),
        T(
            "recommendations unavailable for session {session_id}: {reason}",
            "WARN",
            "degraded",
            component="handlers",
        ),
    ],
    "cart": [
        T(
            "Loaded cart for user {user_id} with {small} items in {duration_ms} ms",
            "INFO",
            routes=("GET",),
            component="CartService",
        ),
        T(
            "Added item {sku} (qty {qty}) to cart of user {user_id}",
            "INFO",
            routes=("items",),
            component="CartService",
        ),
        T("Emptied cart for user {user_id}", "INFO", routes=("DELETE",), component="CartService"),
        T(
            "Cart key cart:{user_id} expires in {n} minutes",
            "DEBUG",
            routes=("items",),
            component="RedisCartStore",
        ),
        T(
            "Redis connection pool: {small} active, {small} idle",
            "DEBUG",
            "background",
            0.5,
            component="RedisCartStore",
        ),
        T("Evicted {count} expired carts", "INFO", "background", 0.05, component="CartJanitor"),
    ],
    "checkout": [
        T("placing order for user {user_id} in {currency}", "INFO", component="service.go"),
        T("payment went through (transaction_id: {uuid})", "INFO", component="service.go"),
        T("order confirmation email sent to {email}", "INFO", weight=0.8, component="service.go"),
        T("order {order_id} shipped with {carrier}, tracking {tracking_id}", "INFO", component="service.go"),
        T("charging card {card} for {amount} {currency}", "DEBUG", weight=0.1, component="payment.go"),
        T(
            "failed to send order confirmation to {email}: {reason}",
            "WARN",
            "degraded",
            component="service.go",
        ),
    ],
    "payment": [
        T(
            "Transaction processed: {card_brand} ending {last4} amount {amount} {currency}",
            "INFO",
            component="charge",
        ),
        T("Charge request {uuid} accepted by {partner}", "INFO", component="charge"),
        T("card {card} declined: insufficient funds", "WARN", weight=0.02, component="charge"),
        T("calling {partner} with api key {api_key}", "DEBUG", weight=0.03, component="gateway"),
        T("fraud score {pct} for transaction {uuid}", "DEBUG", component="fraud"),
    ],
    "shipping": [
        T(
            "quote for {small} items to {zip} {country}: {amount} USD",
            "INFO",
            routes=("quote",),
            component="quote.go",
        ),
        T(
            "shipment created: tracking {tracking_id} carrier {carrier}",
            "INFO",
            routes=("shipments",),
            component="ship.go",
        ),
        T(
            "SMS notification queued for {phone}",
            "INFO",
            routes=("shipments",),
            weight=0.5,
            component="notify.go",
        ),
        T("carrier rates cache refreshed: {count} lanes", "INFO", "background", 0.05, component="rates.go"),
    ],
    "email": [
        T(
            "Sending order confirmation to {email} for order {order_id}",
            "INFO",
            component="email_service.sender",
        ),
        T(
            "Rendered template confirmation.html in {fast_ms} ms",
            "DEBUG",
            component="email_service.templates",
        ),
        T("SMTP relay accepted message {hex}@mail.shop.example.com", "INFO", component="email_service.smtp"),
        T(
            "Retrying delivery to {email} (attempt {small})",
            "WARN",
            weight=0.03,
            component="email_service.smtp",
        ),
        T(
            "SMTP connection to smtp.sendgrid.net:587 re-established",
            "INFO",
            "background",
            0.05,
            component="email_service.smtp",
        ),
    ],
    "currency": [
        T(
            "conversion request successful: {amount} {currency} -> {currency2}",
            "INFO",
            routes=("convert",),
            component="convert",
        ),
        T(
            "Getting supported currencies ({n} codes)",
            "DEBUG",
            routes=("currencies",),
            component="currencies",
        ),
        T(
            "rates cache miss for {currency}, loaded from ECB feed in {ms} ms",
            "INFO",
            weight=0.1,
            routes=("convert",),
            component="rates",
        ),
        T("ECB reference rates refreshed ({n} currencies)", "INFO", "background", 0.05, component="rates"),
    ],
    "catalog": [
        T(
            "Listed {count} products in {duration_ms} ms",
            "INFO",
            routes=("/products",),
            component="ProductController",
        ),
        T("Product {sku} served from {source}", "DEBUG", routes=("{id}",), component="ProductService"),
        T(
            "Catalog reloaded: {count} products, {n} categories",
            "INFO",
            "background",
            0.03,
            component="CatalogLoader",
        ),
        T("Slow query on products took {ms} ms", "WARN", weight=0.01, component="ProductRepository"),
    ],
    "recommendation": [
        T(
            "[Recv ListRecommendations] product_ids={sku}, {sku2}, {sku3}",
            "INFO",
            component="recommendation_server",
        ),
        T(
            "Model feature cache hit ratio {pct}%",
            "DEBUG",
            "background",
            0.2,
            component="recommendation_server",
        ),
        T("Loaded embedding index v{n} ({count} items)", "INFO", "background", 0.02, component="model"),
    ],
    "ads": [
        T("received ad request (context_words={word})", "INFO", component="AdService"),
        T("no ads found for category {word}, serving random ads", "DEBUG", weight=0.3, component="AdService"),
        T("Ad inventory refreshed: {count} creatives", "INFO", "background", 0.03, component="AdInventory"),
    ],
    "generic": [
        T(
            "Fetched {count} {nouns} for account {account_id} in {duration_ms} ms",
            "INFO",
            routes=("GET",),
            component="{Noun}Service",
        ),
        T("{Noun} {uuid} loaded from cache", "DEBUG", routes=("{id}",), component="{Noun}Repository"),
        T(
            "Created {noun} {uuid} for customer {customer_id}",
            "INFO",
            routes=("POST",),
            component="{Noun}Service",
        ),
        T("Updated {noun} {uuid}: status={state}", "INFO", routes=("PUT",), component="{Noun}Service"),
        T(
            "Processed {method} {route} for user {user_id} in {duration_ms} ms",
            "INFO",
            weight=2,
            component="{Noun}Controller",
        ),
        T("Notification for {noun} {uuid} sent to {email}", "INFO", weight=0.2, component="Notifier"),
        T("Verification SMS for {noun} sent to {phone}", "INFO", weight=0.1, component="Notifier"),
        T(
            "Payment instrument {card} linked to customer {customer_id}",
            "DEBUG",
            weight=0.02,
            component="{Noun}Service",
        ),
        T(
            "Outgoing call to partner {partner} with Authorization: {bearer}",
            "DEBUG",
            weight=0.03,
            component="PartnerClient",
        ),
        T("Using API key {api_key} for partner {partner}", "DEBUG", weight=0.01, component="PartnerClient"),
        T(
            "Transfer {uuid} from {iban} booked",
            "INFO",
            weight=0.1,
            routes=("POST",),
            component="{Noun}Service",
        ),
        T(
            "Request from [{ipv6}]:{port} authenticated as {email}",
            "INFO",
            weight=0.1,
            component="AuthFilter",
        ),
        T(
            "Optional call to {callee} failed, continuing without it: {reason}",
            "WARN",
            "degraded",
            component="{Noun}Service",
        ),
        T(
            "Scheduled job {job} finished in {duration_ms} ms ({count} {nouns})",
            "INFO",
            "background",
            0.1,
            component="Scheduler",
        ),
        T("Refreshing {noun} index: {count} entries", "INFO", "background", 0.05, component="{Noun}Indexer"),
        T("Cache hit ratio for {noun} lookups: {pct}%", "DEBUG", "background", 0.3, component="{Noun}Cache"),
    ],
    "postgres": [
        T("checkpoint starting: time", "LOG", "background", 0.2),
        T(
            "checkpoint complete: wrote {count} buffers ({small}.{n}%); 0 WAL file(s) added, 0 removed, {small} recycled; "  # noqa: E501
            "write={secs} s, sync=0.0{small} s, total={secs} s",
            "LOG",
            "background",
            0.2,
        ),
        T('automatic vacuum of table "{db}.public.{table}": index scans: 1', "LOG", "background", 0.1),
        T(
            "duration: {ms}.{small} ms  statement: SELECT id, status FROM {table} WHERE id = $1",
            "LOG",
            "background",
            0.3,
        ),
        T(
            "connection authorized: user=app database={db} application_name={caller}",
            "LOG",
            "background",
            0.5,
        ),
        T("could not receive data from client: Connection reset by peer", "LOG", "background", 0.02),
        T("the database system is shutting down", "FATAL", "outage", component=""),
        T("terminating connection due to administrator command", "FATAL", "outage"),
        T("sorry, too many clients already", "FATAL", "outage"),
        T("database system was interrupted; last known up at {last_up} UTC", "LOG", "startup"),
        T("database system is ready to accept connections", "LOG", "startup"),
    ],
    "nginx": [],  # access log lines are rendered from the request itself
}

# ``request_error`` lines: what each language's framework logs when a request fails.
ERROR_LINES = {
    "java": "Request processing failed for {method} {route}: {exc_type}: {exc_message}",
    "go": "request failed: {method} {route}: {exc_message}",
    "python": "Exception on {route} [{method}]",
    "node": "Unhandled error in {method} {route}: {exc_message}",
    "nginx": "{exc_message}",
}
CLIENT_ERROR_LINES = {
    "java": "Call to {callee} {callee_route} failed: {exc_message}",
    "go": "call to {callee} failed: {exc_message}",
    "python": "Call to %s failed: %s",
    "node": "request to {callee} failed: {exc_message}",
}
OOM_LINES = {
    "java": "Terminating due to java.lang.OutOfMemoryError: Java heap space",
    "go": "fatal error: runtime: out of memory",
    "python": "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?",
    "node": "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
    "nginx": "worker process {pid} exited on signal 9",
}
STARTUP_CRASH_LINES = {
    "java": "Application run failed: org.springframework.beans.factory.BeanCreationException: Error creating bean "  # noqa: E501
    "with name '{noun}Client': Invocation of init method failed",
    "go": "panic: startup: required env {noun_upper}_ENDPOINT is not set",
    "python": "Worker failed to boot: RuntimeError: required setting {noun_upper}_ENDPOINT is missing",
    "node": "Error: Cannot find module './config/{noun}.production.json'",
    "nginx": '[emerg] host not found in upstream "{noun}:8080"',
}


def templates_for(archetype: str, when: str) -> list[Template]:
    pool = ARCHETYPES.get(archetype, ARCHETYPES["generic"])
    found = [t for t in pool if t.when == when]
    if when == "background" and archetype not in ("postgres", "nginx"):
        found += COMMON
    if when in ("startup", "shutdown", "config", "gc") and archetype != "postgres":
        found += [t for t in LIFECYCLE if t.when == when]
    return found


def request_templates(archetype: str, method: str, route: str) -> list[Template]:
    key = f"{method} {route}"
    return [t for t in templates_for(archetype, "request") if not t.routes or any(r in key for r in t.routes)]
