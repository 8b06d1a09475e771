"""Backstage catalog entities (``catalog-info.yaml``, one or more YAML documents) into ``raw.catalog``.

Kept: ``Component`` and ``Resource`` entities. Entities of other kinds (System, API, Group, User, Domain,
Location, Template...) are read, counted in ``ParseResult.ignored`` and not stored; they are not records
of ``raw.catalog``.

- ``name`` = ``metadata.name``; ``namespace`` = ``metadata.namespace`` or ``default``; ``kind`` lower-case;
  ``entity_ref`` = ``kind:namespace/name``, lower-case (Backstage compares refs case-insensitively).
- ``owner``, ``system``, ``lifecycle``, ``type`` = the ``spec`` fields as written.
- ``tier``: the first of a ``metadata.annotations`` key named ``tier`` or ending in ``/tier``
  (``example.com/tier``), the same in ``metadata.labels``, then ``spec.tier``.
- ``depends_on``: ``spec.dependsOn`` as full lower-case entity refs, by Backstage's rules: ``[kind:]
  [namespace/]name``; a missing kind is ``component``, a missing namespace is the entity's own namespace
  (``resource:postgres`` -> ``resource:default/postgres``, ``cart`` -> ``component:default/cart``).
  A single string instead of a list is read as one ref.
- ``annotations``: ``metadata.annotations`` as JSON text (values as strings).

Documents are split at ``---`` lines and parsed one by one, so a broken document does not take the others
with it. Counting: every non-empty document is read; a Component or Resource entity is accepted, a
document that is not valid YAML, not a mapping, has no ``kind``, or a Component/Resource without
``metadata.name`` (or with a name that is not text) is quarantined; a repeated entity ref is quarantined
(the first is kept). ``records_read == accepted.height + quarantine.height``; ``ignored`` counts the other
kinds. An empty file is one quarantined record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson
import polars as pl
import yaml

from qa_assets.lib.ingest.cdevents import ParseResult, decode_text, excerpt_of, has_invalid_bytes
from qa_assets.lib.ingest.tables import CATALOG, conform, empty, quarantine_rows

SOURCE_KIND = "catalog"
KEPT_KINDS = ("component", "resource")
_DOCUMENT_START = re.compile(r"^---(?:[ \t]|$)")
_DOCUMENT_END = re.compile(r"^\.\.\.[ \t]*$")


@dataclass
class _Document:
    first_line: int  # line where the document's text starts (from 1)
    line: int  # its first content line: the entity's position in the file
    offset: int  # byte offset of that line
    text: str


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _only_markers(lines: list[str]) -> bool:
    """Nothing but blank lines, comments, directives and bare `---` / `...` markers."""
    return all(
        not _is_content(ln) or ln.startswith("%") or ln.strip() in ("---", "...") for ln in lines
    )


def _split_documents(text: str) -> list[_Document]:
    """Split a YAML stream at ``---`` / ``...`` lines, keeping positions; empty documents are dropped."""
    chunks: list[tuple[int, int, list[str]]] = []  # (first line, byte offset, lines)
    current: list[str] = []
    first_line, first_offset = 1, 0
    line_number, offset = 1, 0
    for raw in text.splitlines(keepends=True):
        if _DOCUMENT_START.match(raw) and current and not _only_markers(current):
            chunks.append((first_line, first_offset, current))
            current, first_line, first_offset = [], line_number, offset
        current.append(raw)
        line_number += 1
        offset += len(raw.encode("utf-8", "surrogateescape"))
        if _DOCUMENT_END.match(raw):
            chunks.append((first_line, first_offset, current))
            current, first_line, first_offset = [], line_number, offset
    if current:
        chunks.append((first_line, first_offset, current))
    documents = []
    for chunk_line, chunk_offset, lines in chunks:
        if _only_markers(lines):
            continue
        index = next(
            i for i, ln in enumerate(lines)
            if _is_content(ln) and not ln.startswith("%") and ln.strip() != "---"
        )
        skipped = sum(len(ln.encode("utf-8", "surrogateescape")) for ln in lines[:index])
        documents.append(_Document(chunk_line, chunk_line + index, chunk_offset + skipped, "".join(lines)))
    return documents


class _Rejected(Exception):
    pass


def _text(value: object) -> str | None:
    """A scalar as text (YAML reads `tier: 1` as a number and dates as dates); None for nothing."""
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def entity_ref(reference: str, *, default_kind: str, default_namespace: str) -> str:
    """A Backstage entity reference ``[kind:][namespace/]name`` as a full lower-case ref."""
    reference = reference.strip()
    kind, namespace = default_kind, default_namespace
    if ":" in reference:
        kind, reference = reference.split(":", 1)
    if "/" in reference:
        namespace, reference = reference.split("/", 1)
    return f"{kind.strip()}:{namespace.strip() or default_namespace}/{reference.strip()}".lower()


def _mapping(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Rejected(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _tier(annotations: dict, labels: dict, spec: dict) -> str | None:
    for source in (annotations, labels):
        for key, value in source.items():
            name = str(key).strip().lower()
            if (name == "tier" or name.endswith("/tier")) and _text(value):
                return _text(value)
    return _text(spec.get("tier"))


def _read_entity(document: object) -> tuple[str, dict[str, object] | None]:
    """(kind, row) for a kept entity, (kind, None) for another kind; raise _Rejected when unusable."""
    if not isinstance(document, dict):
        raise _Rejected(f"a catalog document must be a mapping (an entity), got {type(document).__name__}")
    kind = _text(document.get("kind"))
    if kind is None:
        raise _Rejected("entity without `kind`; Backstage entities need apiVersion, kind and metadata.name")
    if kind.lower() not in KEPT_KINDS:
        return kind.lower(), None
    metadata = _mapping(document.get("metadata"), "metadata")
    spec = _mapping(document.get("spec"), "spec")
    name = metadata.get("name")
    if name is None or (isinstance(name, str) and not name.strip()):
        raise _Rejected(f"{kind} without metadata.name; every entity needs a name")
    if not isinstance(name, str):
        raise _Rejected(
            f"metadata.name must be text, got {type(name).__name__} {name!r}; quote it in the YAML"
        )
    namespace = _text(metadata.get("namespace")) or "default"
    annotations = _mapping(metadata.get("annotations"), "metadata.annotations")
    labels = _mapping(metadata.get("labels"), "metadata.labels")
    depends_on = spec.get("dependsOn")
    if isinstance(depends_on, str):
        depends_on = [depends_on]
    elif depends_on is not None and not isinstance(depends_on, list):
        raise _Rejected(f"spec.dependsOn must be a list of entity refs, got {type(depends_on).__name__}")
    refs = [
        entity_ref(item, default_kind="component", default_namespace=namespace)
        for item in (_text(d) for d in depends_on or [])
        if item
    ]
    return kind.lower(), {
        "entity_ref": f"{kind}:{namespace}/{name.strip()}".lower(),
        "kind": kind.lower(),
        "name": name.strip(),
        "namespace": namespace,
        "owner": _text(spec.get("owner")),
        "system": _text(spec.get("system")),
        "lifecycle": _text(spec.get("lifecycle")),
        "type": _text(spec.get("type")),
        "tier": _tier(annotations, labels, spec),
        "depends_on": refs,
        "annotations": orjson.dumps({str(k): _text(v) for k, v in annotations.items()}).decode()
        if annotations
        else None,
    }


def _yaml_error(exc: yaml.YAMLError, document: _Document) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {document.first_line + mark.line}, column {mark.column + 1}" if mark else ""
    return f"invalid YAML{where}: {problem}"


def parse_catalog(data: bytes, source_file: str) -> ParseResult:
    """Parse one catalog-info.yaml; never raises on bad input (see the module docstring)."""
    text = decode_text(data)
    rows: list[dict[str, object]] = []
    bad: list[tuple[str, int, int, str]] = []
    ignored = 0
    seen: dict[str, int] = {}
    documents = _split_documents(text)
    if not documents:
        bad.append(("the file holds no YAML document; a catalog file holds Backstage entities", 1, 0, text))
    for document in documents:
        if has_invalid_bytes(document.text):
            bad.append(("not valid UTF-8; re-save the catalog file as UTF-8", document.line, document.offset,
                        document.text))
            continue
        try:
            loaded = yaml.safe_load(document.text)
        except yaml.YAMLError as exc:
            bad.append((_yaml_error(exc, document), document.line, document.offset, document.text))
            continue
        if loaded is None:
            continue
        try:
            kind, row = _read_entity(loaded)
        except _Rejected as exc:
            bad.append((str(exc), document.line, document.offset, document.text))
            continue
        if row is None:
            ignored += 1
            continue
        ref = str(row["entity_ref"])
        if ref in seen:
            bad.append((f"entity {ref} is defined twice in the file (first at line {seen[ref]}); "
                        "the first was kept",
                        document.line, document.offset, document.text))
            continue
        seen[ref] = document.line
        rows.append({**row, "source_line": document.line, "source_offset": document.offset})
    accepted = _catalog_frame(rows, source_file)
    quarantine = quarantine_rows(
        SOURCE_KIND, source_file, [b[0] for b in bad], [b[1] for b in bad], [b[2] for b in bad],
        [excerpt_of(b[3]) for b in bad],
    )
    return ParseResult(
        accepted=accepted, quarantine=quarantine, records_read=len(rows) + len(bad), ignored=ignored
    )


def _catalog_frame(rows: list[dict[str, object]], source_file: str) -> pl.DataFrame:
    if not rows:
        return empty(CATALOG)
    schema = {name: dtype for name, dtype in CATALOG.items() if name != "source_file"}
    frame = pl.DataFrame(rows, schema=schema).with_columns(pl.lit(source_file).alias("source_file"))
    return conform(frame, CATALOG)
