"""Command-line interface: argument parsing only; all work happens in the API functions."""
