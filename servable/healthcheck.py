"""The container's HEALTHCHECK: ``python -m servable.healthcheck [--pid PID]``.

Exit 0 when the server answers liveness, 1 otherwise. Liveness only, never readiness:
a model still loading must not get the container restarted (``/v1/readyz`` is for that).

Why not a fixed URL: ``docker run IMAGE --rest_api_port=9000`` appends a flag that wins
over the entrypoint's (last value wins, as in TF Serving), and ``--rest_api_enable_ssl``
or ``--rest_api_port=0`` change how the server can be reached. So the check reads the
server's own command line: PID 1's when it is the server (the entrypoint ``exec``s it),
else the one ``python -m servable.server`` process it finds, else ``--pid``'s. It asks
``GET /v1/healthz`` on the REST port (HTTPS without certificate checks when REST uses
TLS: liveness, not trust), or gRPC health on the gRPC port when REST is off. Without a
command line to read it falls back to ``$REST_API_PORT`` (default 8501), like the
entrypoint.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.request
from dataclasses import dataclass
from typing import Mapping, Sequence

SERVER_MODULE = "servable.server"


@dataclass(frozen=True)
class Endpoint:
    """Where liveness is asked: ``scheme`` is "http", "https" or "grpc"."""

    scheme: str
    port: int


def server_args(cmdline: Sequence[str]) -> list[str] | None:
    """The flags after ``-m servable.server`` in a process's argv, or None if it is not the server."""
    for index in range(len(cmdline) - 1):
        if cmdline[index] == "-m" and cmdline[index + 1] == SERVER_MODULE:
            return list(cmdline[index + 2:])
    return None


def endpoint(args: Sequence[str] | None, env: Mapping[str, str]) -> Endpoint:
    """The endpoint the server with these flags answers liveness on (flags parsed as the server does)."""
    entrypoint_default = Endpoint("http", int(env.get("REST_API_PORT", "8501") or 8501))
    if args is None:
        return entrypoint_default
    from servable.config.flags import FlagError, parse_flags

    try:
        flags = parse_flags(args)
    except FlagError:  # not a command line the server would have started with
        return entrypoint_default
    if flags.rest_api_port > 0 and flags.rest_api_port != flags.port:
        return Endpoint("https" if flags.rest_api_enable_ssl else "http", flags.rest_api_port)
    return Endpoint("grpc", flags.port)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def find_server_args(pid: int | None = None) -> list[str] | None:
    """The server's flags: ``pid``'s, else PID 1's, else those of the only server process found."""
    if pid is not None:
        return server_args(_cmdline(pid))
    args = server_args(_cmdline(1))
    if args is not None:
        return args
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            candidate = server_args(_cmdline(int(entry)))
            if candidate is not None:
                found.append(candidate)
    return found[0] if len(found) == 1 else None


def alive(target: Endpoint, timeout: float = 2.0) -> bool:
    """Whether the server answers liveness at ``target`` within ``timeout`` seconds."""
    if target.scheme == "grpc":
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{target.port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    context = None
    if target.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        url = f"{target.scheme}://127.0.0.1:{target.port}/v1/healthz"
        with urllib.request.urlopen(url, timeout=timeout, context=context) as reply:
            return reply.status == 200
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, default=None, help="the server's process id (default: found)")
    options = parser.parse_args(argv)
    target = endpoint(find_server_args(options.pid), os.environ)
    return 0 if alive(target) else 1


if __name__ == "__main__":
    sys.exit(main())
