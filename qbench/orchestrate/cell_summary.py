"""Terminal output of a cell (rich): the one-screen summary after ``qbench run``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from qbench.measure.gap import check_settings_of, deployment_gap

# wide enough for the summary when output is not a terminal (logs, CI)
console = Console(width=None if Console().is_terminal else 110)


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def print_cell(record: dict[str, Any]) -> None:
    m, t = record.get("metrics", {}), record.get("tags", {})
    status = record["status"]
    color = {"finished": "green", "failed": "red", "skipped": "yellow"}.get(status, "white")
    console.print(f"[bold]{record['cell']}[/bold]  [{color}]{status}[/{color}]  kernel: {t.get('kernel', '—')}  "
                  f"threads: {t.get('threads', '—')}  config: {record['cell_hash']}")
    if record.get("error"):
        console.print(f"[red]error:[/red] {record['error']}")
    if status != "finished":
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("", "value", "", "value"):
        table.add_column(col, justify="right" if col else "left")
    rows = [
        ("top-1", _fmt(m.get("acc.top1"), ".2f", 100) + " %", f"p50 (batch {_fmt(m.get('latency.batch_size'), '.0f')})",
         _fmt(m.get("latency.p50_ms"), ".3f") + " ms"),
        ("FP32 / delta", f"{_fmt(m.get('acc.fp32_top1'), '.2f', 100)} % / "
         f"{_fmt(m.get('acc.delta_top1'), '+.2f', 100)} pt", "p90 / p99",
         f"{_fmt(m.get('latency.p90_ms'), '.3f')} / {_fmt(m.get('latency.p99_ms'), '.3f')} ms"),
        ("top-5", _fmt(m.get("acc.top5"), ".2f", 100) + " %", "p50 95% CI / n",
         f"{_fmt(m.get('latency.ci95_low_ms'), '.3f')}-{_fmt(m.get('latency.ci95_high_ms'), '.3f')} ms / "
         f"{_fmt(m.get('latency.n'), '.0f')}"),
        ("agree w/ FP32", _fmt(m.get("acc.agreement_fp32"), ".2f", 100) + " %", "throughput",
         f"{_fmt(m.get('throughput.samples_per_s'), '.0f')}/s @ {_fmt(m.get('throughput.batch_size'), '.0f')}"),
        ("SQNR / KL", f"{_fmt(m.get('acc.sqnr_db'), '.1f')} dB / {_fmt(m.get('acc.kl_fp32'), '.1e')}",
         "peak RSS load/infer",
         f"{_fmt(m.get('memory.peak_rss_load_mb'), '.0f')} / {_fmt(m.get('memory.peak_rss_inference_mb'), '.0f')} MB"),
        ("size packed/disk", f"{_fmt(m.get('size.packed_model_bytes'), '.1f', 1 / 1024)} / "
         f"{_fmt(m.get('size.artifact_bytes'), '.1f', 1 / 1024)} KiB", "vs FP32 size",
         f"{_fmt(m.get('size.compression_ratio'), '.2f')}x"),
    ]
    gap = deployment_gap(m, t, check_settings_of(record))
    if gap.checked:  # real backends: deployed vs the simulation of the same scheme
        rows.append(("vs simulation", f"{_fmt(m.get('acc.top1_simulated'), '.2f', 100)} % / "
                     f"{_fmt(gap.gap_pt, '+.2f')} pt", "agree w/ simulation", _fmt(gap.agreement, ".2f", 100) + " %"))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if gap.flagged:
        console.print(f"[bold red]⚠ deployment gap:[/bold red] {gap.explanation}", highlight=False, soft_wrap=True)
    if t.get("latency.unstable") == "true":
        console.print(f"[yellow]latency unstable: {t.get('latency.stability_metric')} stayed above the threshold "
                      "after a retry (machine busy?)[/yellow]")
    tracking = record.get("tracking", {})
    where = f"MLflow run {tracking['run_id']} ({tracking['uri']})" if tracking.get("synced") else "not in MLflow"
    console.print(f"record: {record['cell_dir']}/record.json   {where}")
