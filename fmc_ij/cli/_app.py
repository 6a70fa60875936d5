"""The typer app, the shared console and option parsers, and the entry point that maps errors to exit codes."""

from __future__ import annotations

import errno
import logging
import sys

import typer
from rich.console import Console

from fmc_ij import __version__
from fmc_ij.errors import FmcInputError

app = typer.Typer(
    name="fmc-ij",
    help="Paired fluorescence images -> a trained restoration network that runs back in Fiji.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables keep their width when piped (CI logs, files); a terminal sets its own.
_out = Console(width=None if sys.stdout.isatty() else 160)
_DEBUG = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fmc-ij {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    global _DEBUG
    _DEBUG = debug


def _parse_ints(text: str, what: str, n: int | None = None) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise FmcInputError(f"{what} {text!r}: give integers separated by commas, e.g. 64,256,256") from None
    if (n is not None and len(vals) != n) or any(v <= 0 for v in vals):
        raise FmcInputError(f"{what} {text!r}: give {n or 'some'} positive integers separated by commas")
    return vals


def _parse_floats(text: str, what: str, n: int) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise FmcInputError(f"{what} {text!r}: give {n} numbers separated by commas, e.g. 1.0,0.4,0.4") from None
    if len(vals) != n or any(v <= 0 for v in vals):
        raise FmcInputError(f"{what} {text!r}: give {n} positive numbers separated by commas")
    return vals


class _NoteFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{'note' if record.levelno < logging.WARNING else 'warning'}: {record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests and notebooks swap it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def _notes() -> None:
    """What fmc-ij decides on the user's behalf (a resampling, a gate) is said on stderr, one line each."""
    log = logging.getLogger("fmc_ij")
    if not any(getattr(h, "fmc_notes", False) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_NoteFormatter())
        handler.fmc_notes = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: maps input errors to exit code 2 with one line on stderr."""
    import click

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if not debug:  # tifffile logs its own warnings about damaged files; our one-line error says it all
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    _notes()
    try:
        app(args=args, standalone_mode=False, prog_name="fmc-ij")
    except FmcInputError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except OSError as e:  # the file system refused: a one-line answer, not a traceback
        if debug:
            raise
        blocked = "a file is in the way (not a folder)"
        what = {errno.EEXIST: blocked, errno.ENOTDIR: blocked, errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
                errno.ENOSPC: "no space left on the device"}.get(e.errno or 0)  # fmt: skip
        where = e.filename or "a file"
        msg = f"cannot write {where}: {what}; choose another output" if what else f"{where}: {e.strerror or e}"
        typer.echo(f"error: {msg}", err=True)
        sys.exit(2)
    except MemoryError:
        if debug:
            raise
        typer.echo("error: out of memory; use smaller tiles/volumes or the lazy (streamed) options", err=True)
        sys.exit(2)
    except Exception as e:  # an internal bug: still one line unless --debug
        if debug:
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
