"""Read a catalog source — a folder of images or a CSV/TSV — into rows and per-row errors.

Only the structure is checked here (required fields, duplicate ids, unreadable rows); whether
each file is a usable image is checked by the ingest pipeline while decoding.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.data.images import IMAGE_SUFFIXES

ID_COLUMNS = ("id", "item_id", "sku", "product_id")
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "img")
LABEL_COLUMNS = ("label", "category", "class")


@dataclass
class SourceRow:
    id: str
    path: Path
    label: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int | None = None  # CSV line number, for error messages


@dataclass
class RowError:
    reason: str          # machine-readable code
    message: str         # for people
    id: str | None = None
    path: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "line": self.line, "reason": self.reason, "message": self.message}


class SourceError(Exception):
    """The source as a whole cannot be read (not found, no usable columns)."""


def read_source(source: str | Path, id_column: str | None = None, image_column: str | None = None,
                label_column: str | None = None) -> tuple[list[SourceRow], list[RowError]]:
    source = Path(source).expanduser()
    if source.is_dir():
        rows, errors = read_folder(source), []
    elif source.is_file() and source.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows, errors = read_table(source, id_column, image_column, label_column)
    elif source.exists():
        raise SourceError(f"{source} is neither a folder nor a .csv/.tsv file")
    else:
        raise SourceError(f"source not found: {source}")
    return dedupe(rows, errors)


def read_folder(root: Path) -> list[SourceRow]:
    """Every file under ``root`` (recursive) with an image suffix; label = its sub-folder name.

    Files with other suffixes are not listed (a folder often holds READMEs and CSVs). Ids are
    the path relative to ``root`` without suffix, so they stay stable between runs.
    """
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = path.relative_to(root)
        label = rel.parts[-2] if len(rel.parts) > 1 else None
        rows.append(SourceRow(id=rel.with_suffix("").as_posix(), path=path.resolve(), label=label))
    return rows


def read_table(path: Path, id_column: str | None, image_column: str | None,
               label_column: str | None) -> tuple[list[SourceRow], list[RowError]]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(text)
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise SourceError(f"{path} is empty") from None
    image_col = _pick(header, image_column, IMAGE_COLUMNS, "image")
    id_col = _pick(header, id_column, ID_COLUMNS, "id", required=id_column is not None)
    label_col = _pick(header, label_column, LABEL_COLUMNS, "label", required=label_column is not None)
    rows, errors = [], []
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) != len(header):
            errors.append(RowError("bad_row", f"expected {len(header)} fields, found {len(values)}", line=line))
            continue
        record = {h: v.strip() for h, v in zip(header, values)}
        image = record.get(image_col, "")
        item_id = record.get(id_col, "") if id_col else Path(image).stem
        if not image:
            errors.append(RowError("missing_field", f"empty '{image_col}' column", id=item_id or None, line=line))
            continue
        if not item_id:
            errors.append(RowError("missing_field", f"empty '{id_col}' column", path=image, line=line))
            continue
        image_path = Path(image).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        metadata = {k: v for k, v in record.items() if k not in (id_col, image_col, label_col)}
        label = (record.get(label_col) or None) if label_col else None
        rows.append(SourceRow(id=item_id, path=image_path.resolve(), label=label, metadata=metadata, line=line))
    return rows, errors


def dedupe(rows: list[SourceRow], errors: list[RowError]) -> tuple[list[SourceRow], list[RowError]]:
    """Keep the first row of each id; later ones are reported, never silently merged."""
    seen: dict[str, SourceRow] = {}
    unique = []
    for row in rows:
        if row.id in seen:
            first = seen[row.id]
            where = f"line {first.line}" if first.line else str(first.path)
            errors.append(RowError("duplicate_id", f"id already used by {where}", id=row.id,
                                   path=str(row.path), line=row.line))
            continue
        seen[row.id] = row
        unique.append(row)
    return unique, errors


def _sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _pick(header: list[str], wanted: str | None, candidates: tuple[str, ...], what: str,
          required: bool = True) -> str | None:
    if wanted:
        if wanted not in header:
            raise SourceError(f"{what} column {wanted!r} not found; columns are: {', '.join(header)}")
        return wanted
    lower = {h.lower(): h for h in header}
    for name in candidates:
        if name in lower:
            return lower[name]
    if what == "image" and required:
        raise SourceError(f"no image column found (tried {', '.join(candidates)}); pass --image-column")
    return None
