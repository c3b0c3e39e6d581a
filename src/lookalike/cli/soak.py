"""`lookalike bench soak`: mixed reads / uploads / writes at high concurrency, then the integrity check."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lookalike.bench.soak import soak
from lookalike.cli.app import CatalogOption, HomeOption, bench_app, console, fail, out, print_json


@bench_app.command("soak")
def bench_soak(
    catalog: str = CatalogOption,
    duration: float = typer.Option(60.0, "--duration", min=1, help="Seconds of load."),
    concurrency: int = typer.Option(64, "--concurrency", min=1, max=256, help="Clients sending at once."),
    in_place: bool = typer.Option(False, "--in-place", help="Soak the catalog itself (default: a scratch copy)."),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Server worker processes (`lookalike serve --workers`)."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Serve a copy of the catalog on loopback and drive it with reads, uploads, writes (with a random API key)
    and intended errors for --duration seconds; then check its integrity. Exit 1 on any unintended answer
    (5xx, unexpected 4xx, timeout) or integrity error."""
    try:
        report = soak(catalog, home, duration=duration, concurrency=concurrency, in_place=in_place, seed=seed,
                      workers=workers, on_status=lambda m: console.print(m, highlight=False))
    except (LookupError, ValueError, RuntimeError) as exc:
        fail(str(exc).strip('"'))
    if json_out:
        print_json(report.to_dict())
    else:
        out.print(f"{report.requests} requests in {report.seconds}s at concurrency {report.concurrency}: "
                  f"{report.qps} req/s, p50 {report.p50_ms} ms, p99 {report.p99_ms} ms"
                  + (f" (all {report.prepared} prepared requests sent before the time was up)"
                     if report.requests >= report.prepared else ""))
        out.print(f"{'kind':10} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8}")
        for kind, row in sorted(report.by_kind.items()):
            out.print(f"{kind:10} {row['requests']:8d} {row['errors']:6d} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f}")
        out.print("statuses: " + ", ".join(f"{k} {v}" for k, v in report.statuses.items()))
        out.print(f"intended 4xx answered as intended: {report.intended}; errors: {report.errors}")
        integrity = report.integrity or {}
        problems = integrity.get("problems", [])
        out.print(f"integrity: {'ok' if integrity.get('ok') else 'FAILED'} ({integrity.get('items')} items"
                  + (f"; {', '.join(p['severity'] + ' ' + p['code'] for p in problems)}" if problems else "") + ")")
    if not report.ok:
        raise typer.Exit(1)
