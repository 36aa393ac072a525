"""The `jeffrey` command line."""
