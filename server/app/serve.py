"""Run a server until SIGTERM or SIGINT, then drain gracefully and exit 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass

from bertdot.server.app.config import ServerConfig
from bertdot.server.app.server import BertdotServer


@dataclass(frozen=True)
class Ready:
    """What a serving process reports once it serves."""

    port: int
    metrics_port: int | None
    described: str  # e.g. "CPUExecutionProvider fp32"


async def serve_forever(
    config: ServerConfig, on_ready: Callable[[Ready], None] | None = None
) -> int:
    """Serve until a signal. `on_ready` (a supervised worker) replaces the banner."""
    server = BertdotServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await server.start(wait_ready=True)
    except BaseException:
        await server.stop(grace=0)
        raise
    info = server.service.info_response
    model = info.model if info else None
    ready = Ready(port, server.metrics_port, f"{model.provider} {model.precision}" if model else "")
    if on_ready is not None:
        on_ready(ready)
    else:
        announce(config, ready)
    await stop.wait()
    if on_ready is None:
        print(f"draining (up to {config.grace_s:g} s)", flush=True)
    await server.stop()
    return 0


def announce(config: ServerConfig, ready: Ready, workers: int = 1) -> None:
    where = f"{config.host}:{ready.port}"
    processes = f", {workers} worker processes" if workers > 1 else ""
    print(f"bertdot serving on {where} ({ready.described}{processes})")
    if ready.metrics_port is not None and workers == 1:  # else the supervisor lists each
        print(f"metrics on http://{config.host}:{ready.metrics_port}/metrics")
    print(f'try: bertdot search --target {where} "your query"', flush=True)
