"""Developer and operator tooling: the `jeffrey` CLI (typer) and the embedded-stack launcher behind
`make run`. Nothing here runs inside the API, the workers or beat (a test checks the services never
import it); it depends on `jeffrey_core`, never the other way round."""
