"""The `unipgen` command line. With `--json`, a command prints exactly one JSON object.

One module per command group: `data` (ingest, check, purge, demo), `users` (users, events),
`generate` (context, generate, train, protect, feedback, worker, jobs), `chat`, `describe`, `recommend` (fit, recommend),
`simulate` (the user simulator), `service` (serve, keys), `evaluation` (eval) and `bench`;
`common` holds what they share. This module puts
them together in the order `unipgen --help` lists them. Heavy modules (the store, numpy, faiss)
are imported inside the commands so that `unipgen --help` stays fast.
"""

from __future__ import annotations

import json
import sys

import typer

from unipgen.cli import chat, data, describe, evaluation, generate, recommend, service, simulate, users
from unipgen.cli.bench import bench_app
from unipgen.cli.common import Home
from unipgen.errors import UnipgenError

__all__ = ["app", "main"]


def _root(home: Home = None) -> None:
    """The options every command shares; the helpers of `unipgen.cli.common` read them from the context."""


def _app() -> typer.Typer:
    """The root command: its own commands first, then the groups (the order `--help` lists)."""
    app = typer.Typer(help="unipgen: unified personalized generation.", no_args_is_help=True)
    app.callback()(_root)
    for command in (data.check, generate.context, recommend.recommend, recommend.fit, generate.generate,
                    generate.train, generate.protect, chat.chat, describe.describe, generate.worker, generate.feedback, simulate.simulate, service.serve,
                    data.purge, data.demo):
        app.command()(command)
    for group, name in ((data.ingest_app, "ingest"), (users.users_app, "users"), (bench_app, "bench"),
                        (generate.jobs_app, "jobs"), (service.keys_app, "keys"), (evaluation.eval_app, "eval"),
                        (users.events_app, "events")):
        app.add_typer(group, name=name)
    return app


app = _app()


def main() -> None:
    try:
        code = app(standalone_mode=False)  # without standalone mode, click returns typer.Exit's code
    except UnipgenError as exc:
        if "--json" in sys.argv[1:]:
            typer.echo(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        else:
            typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)
