"""Measure one-result-per-product search on a labelled catalog with a generated product grouping.

    cp -r ~/.lookalike /tmp/copy    # the study writes a product_id column into the catalog: use a copy
    LOOKALIKE_HOME=/tmp/copy python -m lookalike.bench.studies.product_grouping --catalog clothing \
        --queries 300 --out /tmp/grouping.json

1. **Grouping** — items of each label are shuffled (``--seed``) and cut into made-up products of
   2-4 images (sizes drawn uniformly); the grouping is written as a ``product_id`` column through
   the catalog's own ingest (a CSV of the last source's rows plus the column: unchanged images are
   not re-embedded, only their metadata is updated).
2. **Search** — ``--queries`` random items are searched with ``group_by="product_id"`` at each k in
   ``--ks``: counts how many answers hold exactly k distinct products, none of them the query's,
   and the time per search next to a plain search.
3. **Evaluation** — leave-one-out at item level (plain) and at product level
   (:mod:`lookalike.evaluation.products`), relevance = same label.
Prints markdown tables; ``--out`` writes the JSON.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.catalog import Catalog


def make_products(ids: list[str], labels: list[str | None], seed: int = 0, sizes: tuple[int, int] = (2, 4)
                  ) -> dict[str, str]:
    """item id -> made-up product id: each label's items shuffled and cut into runs of
    ``sizes[0]..sizes[1]`` images (a last run of one joins the previous product)."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for item_id, label in zip(ids, labels):
        by_label.setdefault(label or "", []).append(item_id)
    product: dict[str, str] = {}
    for label in sorted(by_label):
        members = [by_label[label][i] for i in rng.permutation(len(by_label[label]))]
        start, n = 0, 0
        while start < len(members):
            size = int(rng.integers(sizes[0], sizes[1] + 1))
            run = members[start:start + size]
            name = f"{label or 'none'}-p{n:04d}"
            if len(run) < sizes[0] and n:  # too short: fold into the previous product
                name = f"{label or 'none'}-p{n - 1:04d}"
            for item_id in run:
                product[item_id] = name
            start += size
            n += 1
    return product


def write_products(cat: Catalog, products: dict[str, str], path: Path) -> Path:
    """A CSV of every item (id, absolute image path, label, metadata + ``product_id``)."""
    items = cat.items()
    keys = sorted({k for it in items for k in it.metadata} - {"product_id"})
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "image", "label", *keys, "product_id"])
        for it in items:
            writer.writerow([it.id, it.path, it.label or "", *(it.metadata.get(k, "") for k in keys),
                             products.get(it.id, "")])
    return path


def measure_search(cat: Catalog, queries: list[str], ks: list[int]) -> list[dict]:
    rows = []
    for k in ks:
        exact, foreign, t_group, t_plain = 0, 0, 0.0, 0.0
        for item_id in tqdm(queries, desc=f"search k={k}", leave=False):
            own = cat.get(item_id).metadata.get("product_id")
            t0 = time.perf_counter()
            hits = cat.search(item=item_id, k=k, group_by="product_id", expansion="none")
            t_group += time.perf_counter() - t0
            t0 = time.perf_counter()
            cat.search(item=item_id, k=k, expansion="none")
            t_plain += time.perf_counter() - t0
            products = [h.metadata.get("product_id") for h in hits]
            exact += len(hits) == k and len(set(products)) == k
            foreign += own not in products
        n = len(queries)
        rows.append({"k": k, "queries": n, "k_distinct_products": exact / n, "query_product_absent": foreign / n,
                     "ms_grouped": 1000 * t_group / n, "ms_plain": 1000 * t_plain / n})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--home", default=None)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ks", default="10,50")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/lookalike-product-grouping")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    cat = Catalog.open(args.catalog, home=args.home)
    items = cat.items()
    products = make_products([it.id for it in items], [it.label for it in items], seed=args.seed)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = write_products(cat, products, workdir / f"{cat.name}-products.csv")
    t0 = time.perf_counter()
    report = cat.index(source, cat.default_encoder)
    sizes = np.bincount(np.unique(list(products.values()), return_counts=True)[1])
    grouping = {"items": len(products), "products": len(set(products.values())),
                "images_per_product": {int(s): int(n) for s, n in enumerate(sizes) if n},
                "reindex_s": round(time.perf_counter() - t0, 1), "re_embedded": report.added + report.updated,
                "metadata_updated": report.metadata_updated}

    rng = np.random.default_rng(args.seed)
    queries = [items[i].id for i in rng.choice(len(items), size=min(args.queries, len(items)), replace=False)]
    search_rows = measure_search(cat, queries, [int(k) for k in args.ks.split(",")])

    ks = (1, 5, 10)
    item_level = cat.evaluate(ks=ks, expansion="none").overall
    product_level = cat.evaluate(ks=ks, expansion="none", group_by="product_id")
    evaluation = {"item": item_level, "product": product_level.overall, "product_queries": product_level.n_queries}

    result = {"catalog": cat.name, "encoder": cat.default_encoder, "grouping": grouping, "search": search_rows,
              "evaluation": evaluation, "load_average": os.getloadavg()}
    print(f"## Grouping ({grouping['products']} products of {grouping['items']} items, sizes "
          f"{grouping['images_per_product']}; re-embedded {grouping['re_embedded']})\n")
    print("| k | queries | answers with k distinct products | query's product absent | ms grouped | ms plain |")
    print("|---|---|---|---|---|---|")
    for r in search_rows:
        print(f"| {r['k']} | {r['queries']} | {r['k_distinct_products']:.3f} | {r['query_product_absent']:.3f} | "
              f"{r['ms_grouped']:.1f} | {r['ms_plain']:.1f} |")
    print("\n| level | P@1 | P@5 | P@10 | mAP@10 | R@10 |\n|---|---|---|---|---|---|")
    for level, m in (("item", item_level), ("product", product_level.overall)):
        print(f"| {level} | {m['P@1']:.3f} | {m['P@5']:.3f} | {m['P@10']:.3f} | {m['mAP@10']:.3f} | {m['R@10']:.3f} |")
    print(f"\nload average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
