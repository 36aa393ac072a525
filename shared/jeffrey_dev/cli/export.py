"""`jeffrey export --user ID`: the user's memories, dreams and runs from GET /api/v1/export to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jeffrey_dev.cli.options import ApiOption, TokenOption, VarDirOption


def export(
    user: Annotated[str, typer.Option("--user", "-u", help="Whose data to export.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (default: jeffrey-export-USER.jsonl).")
    ] = None,
    api: ApiOption = None,
    token: TokenOption = None,
    var_dir: VarDirOption = Path("var"),
) -> None:
    """Stream the export (JSON lines) to OUT with a progress bar; the file is complete only on success."""
    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from jeffrey_dev.cli.main import _api_url, _mint_for

    api = api or _api_url()
    params = {} if token is None else {"user_id": user}
    token = token or _mint_for(user, var_dir)
    out = out or Path(f"jeffrey-export-{user}.jsonl")
    partial = out.with_name(out.name + ".partial")
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=api, headers=headers, timeout=60) as client,
        client.stream("GET", "/api/v1/export", params=params) as response,
    ):
        if response.status_code != 200:
            response.read()
            typer.echo(f"export refused: HTTP {response.status_code} {response.text[:300]}", err=True)
            raise typer.Exit(1)
        total = int(response.headers.get("X-Export-Records", "0")) + 1  # + the header line
        with (
            Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), transient=True) as progress,
            partial.open("w", encoding="utf-8") as sink,
        ):
            task = progress.add_task("export", total=total)
            lines = 0
            for line in response.iter_lines():
                sink.write(line + "\n")
                lines += 1
                progress.advance(task)
    partial.replace(out)
    typer.echo(str(out))
    typer.echo(f"exported {lines - 1} records of {user} to {out}", err=True)
