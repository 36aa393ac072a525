"""Options shared by the commands that talk to the API (`memories import`, `export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ApiOption = Annotated[
    str | None,
    typer.Option(envvar="JEFFREY_API_URL", help="API base URL (default: the running `make run`)."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(envvar="JEFFREY_TOKEN", help="Bearer token (admin to act for another user)."),
]
VarDirOption = Annotated[Path, typer.Option(help="Embedded stack folder (for its dev secret).")]
