"""The main job and reports: demo, report."""

from __future__ import annotations

from pathlib import Path

import typer

from fmc_ij.cli._app import _out, app


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Output folder."),
    minutes: float = typer.Option(6.0, help="Training budget: sets the steps (50 per minute); stops at 1.5x it."),
    seed: int = typer.Option(0, help="Seed of data, split, weights and patches: the same seed, the same metrics."),
    steps: int = typer.Option(None, min=1, help="Training steps (default: from --minutes)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, help="Write into a non-empty --out."),
) -> None:
    """Simulate, register, train care3d, predict, evaluate, SQUIRREL, export a bundle, and write report.html."""
    from fmc_ij.demo import run_demo

    res = run_demo(out, minutes=minutes, seed=seed, steps=steps, device=device, overwrite=overwrite, log=_out.print)
    for ch, m in res.metrics.items():
        _out.print(
            f"{ch}: N_SSIM {m['n_ssim']:+.3f}  SSIM {m['ssim_input']:.3f} -> {m['ssim_pred']:.3f}  "
            f"PSNR {m['psnr_input']:.2f} -> {m['psnr_pred']:.2f} dB"
        )
    if res.stopped_by_time_limit:
        _out.print(f"note: training hit its time limit at step {res.steps}; metrics depend on speed")
    _out.print(f"bundle: {res.bundle}")
    _out.print(f"report: [bold]{res.report}[/bold]  (open it in a browser)")


@app.command()
def report(
    run: Path = typer.Argument(..., help="A demo folder or a training run folder."),
    out: Path = typer.Option(None, "--out", "-o", help="HTML file (default RUN/report.html)."),
    preview: bool = typer.Option(True, help="For a training run: show the model on validation data."),
    png: Path = typer.Option(None, help="Also render the page in headless Chromium to this PNG."),
) -> None:
    """Write a self-contained HTML report (figures embedded) for a demo or a training run."""
    from fmc_ij.report import screenshot
    from fmc_ij.run_report import run_report

    page = run_report(run, out, preview=preview)
    _out.print(f"report: [bold]{page}[/bold]")
    if png is not None:
        _out.print(f"rendered: {screenshot(page, png)}")
