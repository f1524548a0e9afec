"""The async collector: runs a batch of streamed requests against a local LLM server, times them
on the client, publishes req.*/batch.* events and records them with the telemetry it receives.

Entry point: ``python -m collector --help``. Pure parts: stream_parse, backends, failures, plan,
settings, tasks. I/O: runner (HTTP), metadata (HTTP), recorder (bus + file), batch_run, cli.
"""
