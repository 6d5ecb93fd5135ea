"""The ``edgebuf`` command line: status, export, repair, cleanup, requeue-failed, drill.

Every command takes ``--db`` (default: ``$BUFFER_DB_PATH``, read through
``edgebuf.config``) and exits non-zero with a one-line message on error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from edgebuf.errors import EdgebufError


def _settings_db() -> Path:
    """The buffer the environment names. A malformed ``EDGEBUF_*`` variable is an error that
    names it: guessing the default path could operate on the wrong buffer."""
    from edgebuf.config import load_settings

    try:
        return load_settings().db_path
    except EdgebufError as exc:
        raise click.ClickException(f"{exc} (fix the variable, or pass --db)") from None


db_option = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Buffer file [default: $BUFFER_DB_PATH or data/prediction_buffer.db].",
)


def _db(db: Path | None, must_exist: bool = True) -> Path:
    path = db or _settings_db()
    if must_exist and not path.exists():
        raise click.ClickException(f"no buffer at {path} (use --db or BUFFER_DB_PATH)")
    return path


def _monitor(db: Path | None):
    from edgebuf.ops.monitor import BufferMonitor

    return BufferMonitor(_db(db))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgebuf")
def main() -> None:
    """edgebuf: a durable edge buffer for vision predictions."""


@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
def status(db: Path | None, as_json: bool) -> None:
    """Show counts, backlog age, capacity and disk of a buffer."""
    with _guard(), _monitor(db) as mon:
        if as_json:
            click.echo(json.dumps(mon.get_full_status(), indent=2))
        else:
            mon.print_status()


@main.command()
@db_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("edgebuf-stats"),
    show_default=True,
)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True
)
def export(db: Path | None, out_dir: Path, fmt: str) -> None:
    """Write per-record delivery facts, the backlog series and dropped records."""
    with _guard(), _monitor(db) as mon:
        result = mon.export_stats(out_dir, fmt)
        for f in result.files:
            click.echo(f)
        click.echo(f"{len(result.records)} records, {len(result.dropped)} dropped", err=True)


@main.command()
@db_option
def repair(db: Path | None) -> None:
    """Check integrity; if damaged, keep the file aside and salvage every readable row."""
    from edgebuf.store.repair import repair_db

    with _guard():
        report = repair_db(_db(db))
    click.echo(json.dumps(report, indent=2))


@main.command()
@db_option
@click.option("--older-than-days", type=float, default=7.0, show_default=True)
def cleanup(db: Path | None, older_than_days: float) -> None:
    """Delete sent records older than N days and reclaim space (pending rows are kept)."""
    from edgebuf.space.capacity import CapacityManager

    with _guard(), _monitor(db) as mon:
        manager = CapacityManager(mon.store, capacity_bytes=mon.capacity_bytes)
        click.echo(json.dumps(manager.cleanup(older_than_days)))


@main.command("requeue-failed")
@db_option
def requeue_failed(db: Path | None) -> None:
    """Put dead-lettered records back to pending; a running client sends them."""
    with _guard(), _monitor(db) as mon:
        n = mon.store.requeue_failed()
    click.echo(f"requeued {n} records")


@main.command()
@db_option
@click.option("--endpoint", default=None, help="Cloud base URL [default: $CLOUD_LOGGING_ENDPOINT].")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for re-sent records to be delivered.")  # fmt: skip
def reconcile(db: Path | None, endpoint: str | None, timeout: float) -> None:
    """Ask the cloud now what it holds, confirm delivered records and send again what it lost.

    The buffer must not be in use by a running client (which reconciles by itself every
    EDGEBUF_RECONCILE_INTERVAL seconds). Exit 1 if the cloud could not answer."""
    from edgebuf import EnhancedAsyncLoggingClient

    with _guard(), EnhancedAsyncLoggingClient(endpoint, _db(db), reconcile_interval=1.0) as client:
        if client.reconciler is None:
            raise click.ClickException("this transport cannot reconcile")
        deadline = time.monotonic() + timeout
        confirmed = resent = 0
        while True:
            report = client.reconciler.run_once()
            if report.errors:
                raise click.ClickException("; ".join(report.errors))
            confirmed, resent = confirmed + report.confirmed, resent + report.resent
            delivered = client.flush(timeout=max(0.0, deadline - time.monotonic()))
            if not delivered or (not report.resent and not report.more and not report.undecided):
                break
        click.echo(f"confirmed {confirmed}, sent again {resent}, all delivered: {delivered}")
        if not delivered:
            sys.exit(1)


@main.command()
@click.option(
    "--kills",
    type=click.IntRange(5, 100_000),
    default=200,
    show_default=True,
    help="SIGKILLs in the crash matrix, spread over five phases.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--power-cuts",
    type=click.IntRange(0, 100_000),
    default=20,
    show_default=True,
    help="Trials per power-loss row (the power-cut filesystem; 0: none).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the Markdown table here.",
)
def reliability(kills: int, seed: int, power_cuts: int, out: Path | None) -> None:
    """Run the crash / fault / shutdown / corruption / power-loss matrix; exit 1 on any loss
    or duplicate."""
    from edgebuf.lab.reliability import format_table, run_all

    started = time.monotonic()
    rows = run_all(kills, seed, progress=lambda m: click.echo(m, err=True), power_cuts=power_cuts)
    table = format_table(rows)
    command = f"edgebuf reliability --kills {kills} --seed {seed} --power-cuts {power_cuts}"
    click.echo(f"{table}\n\n`{command}` ({time.monotonic() - started:.0f} s)")
    if out is not None:
        out.write_text(table + f"\n\nProduced by `{command}`.\n")
    if not all(r.ok for r in rows):
        sys.exit(1)


@main.command()
@click.option("--seed", type=int, default=None, help="Replay this one seed exactly.")
@click.option(
    "--seeds", type=click.IntRange(min=1), default=None, help="Run K seeds, from --first [200]."
)
@click.option("--days", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.option(
    "--first", type=click.IntRange(min=0), default=0, help="With --seeds: start at seed S."
)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds run at once, each in its own process.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def simulate(
    seed: int | None, seeds: int | None, days: float, first: int, jobs: int, as_json: bool
) -> None:
    """Simulate days of the real client on a virtual clock under seeded faults; exit 1 on
    any violated invariant (loss, duplicate, stall, counters, flush, capacity, sequences)."""
    if seed is not None and seeds is not None:
        raise click.UsageError("give --seed N or --seeds K, not both")
    from edgebuf.lab.simulate import cli_main

    code = cli_main(
        seed=seed, seeds=seeds, days=days, as_json=as_json, echo=click.echo, first=first,
        jobs=jobs,
    )  # fmt: skip
    sys.exit(code)


class _guard:
    """Turn edgebuf errors into a clean one-line message and exit status 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and isinstance(exc, (EdgebufError, OSError)):
            raise click.ClickException(str(exc))
        return False


@main.command("export-onnx")
@click.option(
    "--model",
    "weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("data/conveyor_yolov8n.pt"),
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write it [default: next to the weights, .onnx].",
)
@click.option("--imgsz", default=320, show_default=True)
def export_onnx_command(weights: Path, out: Path | None, imgsz: int) -> None:
    """Export a YOLO .pt to ONNX for `edgebuf edge --model X.onnx` (needs the onnx extra)."""
    try:
        from edgebuf.vision.model import export_onnx

        written = export_onnx(weights, out, imgsz=imgsz)
    except ImportError as exc:
        raise click.ClickException(
            f"{exc}; install the onnx extra: pip install 'edgebuf[onnx]'"
        ) from None
    click.echo(written)


def _register_optional() -> None:
    from edgebuf.lab.drill import drill_command

    main.add_command(drill_command)


try:
    _register_optional()
except ImportError:  # pragma: no cover - drill module missing in a stripped install
    pass


def _register_edge() -> None:
    from edgebuf.service.command import edge_command

    main.add_command(edge_command)


try:
    _register_edge()
except ImportError:  # pragma: no cover - the edge service's dependencies are not installed
    pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
