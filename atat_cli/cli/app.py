"""The `atat` command line: one table maps command names to functions.

Command modules import only typer at the top; torch, datasets and the core are imported inside
the command bodies, so `atat --help` is instant.
"""

from __future__ import annotations

import os
import sys

import typer

from atat_cli.cli import ablate, config_cmd, data, evaluate, export, gif, heatmap, import_cmd, sample, train

# (group, name, function). group None is a top-level command. `--help` is built from this table
# alone (a test checks it), so a command that is not here does not exist.
COMMANDS = [
    (None, "train", train.train),
    (None, "eval", evaluate.evaluate),
    (None, "sample", sample.sample),
    (None, "ablate", ablate.ablate),
    (None, "gif", gif.gif),
    (None, "heatmap", heatmap.heatmap),
    (None, "export", export.export),
    ("import", "mdlm", import_cmd.mdlm),
    ("data", "fetch", data.fetch),
    ("data", "list", data.list_corpora),
    ("data", "info", data.info),
    ("config", "list", config_cmd.list_presets),
    ("config", "show", config_cmd.show),
    ("config", "copy", config_cmd.copy),
]

GROUP_HELP = {
    "data": "Prepare corpora: tokenize to memory-mapped blocks (offline default: pydocs).",
    "config": "List, print and copy the shipped configuration presets.",
    "import": "Import models trained elsewhere (MDLM's released DiT) as folders every RUN argument takes.",
}


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="atat",
        help="Train, evaluate and sample masked diffusion language models (MDLM + ATAT).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    groups: dict[str, typer.Typer] = {}
    for group, name, fn in COMMANDS:
        target = app
        if group is not None:
            if group not in groups:
                groups[group] = typer.Typer(help=GROUP_HELP[group], no_args_is_help=True)
                app.add_typer(groups[group], name=group)
            target = groups[group]
        target.command(name)(fn)

    @app.callback()
    def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (or ATAT_DEBUG=1).")):
        if debug:
            os.environ["ATAT_DEBUG"] = "1"

    return app


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app and turns errors into `Error: ...` lines and exit codes."""
    from rich.markup import escape

    from atat_cli.cli.output import err
    from atat_cli.errors import AtatError

    Exit, Abort, ClickException = _click_exceptions()
    argv = sys.argv[1:] if argv is None else argv
    try:
        result = build_app()(args=argv, prog_name="atat", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except AtatError as e:
        if os.environ.get("ATAT_DEBUG") == "1":
            raise
        err.print(f"[bold red]Error:[/] {escape(e.message)}", highlight=False)  # messages may hold [MASK]
        if e.hint:
            err.print(f"[bold]Hint:[/] {escape(e.hint)}", highlight=False)
        code = 1
    except Exit as e:
        code = e.exit_code
    except Abort:
        err.print("Aborted.")
        code = 130
    except ClickException as e:
        e.show()
        code = e.exit_code
    except KeyboardInterrupt:
        err.print("Interrupted.")
        code = 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if os.environ.get("ATAT_DEBUG") == "1":
            raise
        err.print(f"[bold red]Error:[/] {type(e).__name__}: {escape(str(e))}", highlight=False)
        err.print("[bold]Hint:[/] rerun with --debug (or ATAT_DEBUG=1) for the traceback", highlight=False)
        code = 1
    return code


def _click_exceptions() -> tuple[type, type, type]:
    """(Exit, Abort, ClickException) of the click that typer runs on: click itself before typer
    0.26, typer's own copy of it (typer._click) from 0.26 on."""
    try:
        from typer._click.exceptions import ClickException
        from typer.exceptions import Abort, Exit
    except ImportError:
        from click.exceptions import Abort, ClickException, Exit
    return Exit, Abort, ClickException


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
