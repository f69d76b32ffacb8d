"""Stand-alone server scripts the orchestrator starts as child processes.

Each is run as ``<venv python> benchmarks/peers/<script>.py ...`` (a file path, not a module,
because the peer venvs cannot import the ``benchmarks`` package), binds 127.0.0.1 only,
and exits on SIGTERM. The orchestrator stops each one by the PID it started.
"""
