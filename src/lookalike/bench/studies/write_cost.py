"""What one write costs the next search of a serving process (docs/deploy.md, the soak section).

    python -m lookalike.bench.studies.write_cost --catalog clothing --home /tmp/copy-of-home --writes 12

WRITES TO THE CATALOG: run it on a copy (``cp -r HOME /tmp/copy``). One process opens the catalog,
warms it (index, vector cache, DBA gallery) and then, ``--writes`` times each: a metadata PATCH
(``Catalog.update_metadata``), a delete (``Catalog.remove``) and a vector upsert (a catalog item
stored again under a new id with its own vector, ``Catalog.add_embedded``), timing the item-to-item
search that follows each write (the work a write leaves for the next request: matrix cache, index,
DBA). Prints the median milliseconds per kind as JSON, with the same search without a write first.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from lookalike.catalog import Catalog


def write_cost(cat: Catalog, writes: int = 12, k: int = 10) -> dict[str, float]:
    """Median ms of the search after each kind of write (and with no write), ``writes`` of each."""
    items = cat.items(limit=20 + 8 * writes)
    if len(items) < 20 + 8 * writes:
        raise ValueError(f"catalog {cat.name!r} needs at least {20 + 8 * writes} items")
    ids = [it.id for it in items]
    cat.warm()
    for q in ids[:3]:
        cat.search(item=q, k=k)
    spec, fingerprint = cat.default_encoder, cat.encoder_info()["fingerprint"]
    queries = iter(ids[20 + 4 * writes:])

    def timed() -> float:
        start = time.perf_counter()
        cat.search(item=next(queries), k=k)
        return 1000 * (time.perf_counter() - start)

    found: dict[str, list[float]] = {"no write": [timed() for _ in range(writes)], "after metadata patch": [],
                                     "after delete": [], "after vector upsert": []}
    for i in range(writes):
        cat.update_metadata(ids[20 + i], {"write_cost": i})
        found["after metadata patch"].append(timed())
        cat.remove([ids[20 + writes + i]])
        found["after delete"].append(timed())
        item = items[20 + 2 * writes + i]
        have, matrix = cat.vectors()
        cat.add_embedded([{"id": f"write-cost-{i}", "path": item.path, "label": item.label, "sha256": item.sha256}],
                         matrix[have.index(item.id)][None], spec, fingerprint=fingerprint)
        found["after vector upsert"].append(timed())
    return {kind: round(statistics.median(ms), 1) for kind, ms in found.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--home", default=None)
    parser.add_argument("--writes", type=int, default=12)
    args = parser.parse_args(argv)
    print(json.dumps(write_cost(Catalog.open(args.catalog, home=args.home), args.writes)))


if __name__ == "__main__":
    main()
