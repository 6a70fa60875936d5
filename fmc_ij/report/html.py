"""Self-contained HTML pages: PNGs embedded as data URIs, so one file can be mailed, archived or opened offline."""

from __future__ import annotations

import base64
import html
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from fmc_ij.errors import FmcInputError
from fmc_ij.io.atomic import atomic_path, write_text_atomic


class Raw(str):
    """An HTML fragment that fmc-ij built itself (inserted as is, not escaped)."""


Body = str | Raw | Sequence[Path] | Sequence[Mapping[str, object]]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1280px;margin:auto;padding:0 12px;color:#222}"
    "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
    "td{text-align:right}th{background:#f3f3f3}img{max-width:100%;display:block;margin:8px 0}"
    "code,pre{background:#f6f6f6;padding:1px 4px}pre{padding:8px;overflow-x:auto}"
    ".good{color:#0a7d28;font-weight:600}.bad{color:#b00020;font-weight:600}"
)


def png_data_uri(path: str | os.PathLike) -> str:
    """``data:image/png;base64,...`` for a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def table_html(rows: Sequence[Mapping[str, object]]) -> str:
    """A plain HTML table from a list of dicts (columns of the first row); floats to 4 significant digits."""
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    parts = ["<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols) + "</tr>"]
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{html.escape(fmt(row.get(c)))}</td>" for c in cols) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def html_report(path: str | os.PathLike, *, title: str, sections: Sequence[tuple[str, Body]]) -> Path:
    """Write a self-contained HTML page.

    Each section is ``(heading, body)``; the body is text (escaped), :class:`Raw` HTML, a list of PNG paths
    (embedded) or a table (a list of dicts).
    """
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, Raw):
            parts.append(str(body))
        elif isinstance(body, str):
            parts.append(f"<p>{html.escape(body)}</p>")
        elif body and isinstance(body[0], Mapping):
            parts.append(table_html(body))  # type: ignore[arg-type]
        else:
            for png in body:
                alt = html.escape(Path(png).stem)  # type: ignore[arg-type]
                parts.append(f"<img src='{png_data_uri(png)}' alt='{alt}' title='{alt}'>")  # type: ignore[arg-type]
    parts.append("</body></html>")
    return write_text_atomic(path, "\n".join(parts))


def fmt(v: object) -> str:
    """Table cell text: floats to 4 significant digits, None as empty."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def find_chromium() -> str | None:
    """A Chromium / Chrome executable: ``$CHROMIUM``, then ``chromium``, ``chromium-browser``, ``google-chrome``."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(
    page: str | os.PathLike, png: str | os.PathLike, *, size: tuple[int, int] = (1280, 4000), timeout: float = 120
) -> Path:
    """Render an HTML file in headless Chromium and save a PNG of the top ``size`` (width, height) pixels."""
    exe = find_chromium()
    if exe is None:
        raise FmcInputError("no Chromium to render the report: apt-get install chromium, or set CHROMIUM=/path/to/it")
    with tempfile.TemporaryDirectory(prefix="fmc-chromium-") as profile, atomic_path(png) as tmp:
        cmd = [exe, "--headless", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--screenshot={tmp}", f"--window-size={size[0]},{size[1]}", Path(page).resolve().as_uri()]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        tmp.unlink()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Chromium did not finish rendering {page} within {timeout:.0f} s") from None
        if not tmp.is_file() or tmp.stat().st_size == 0:
            tail = (res.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"Chromium wrote no screenshot of {page} (exit {res.returncode}): {tail[0]}")
    return Path(png)
