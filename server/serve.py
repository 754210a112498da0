"""Run a server until SIGTERM or SIGINT, then drain gracefully and exit 0."""

from __future__ import annotations

import asyncio
import signal

from bertdot.server.app import BertdotServer
from bertdot.server.config import ServerConfig


async def serve_forever(config: ServerConfig) -> int:
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
    where = f"{config.host}:{port}"
    print(f"bertdot serving on {where} ({model.provider} {model.precision})" if model else where)
    if server.metrics_port is not None:
        print(f"metrics on http://{config.host}:{server.metrics_port}/metrics")
    print(f'try: bertdot search --target {where} "your query"', flush=True)
    await stop.wait()
    print(f"draining (up to {config.grace_s:g} s)", flush=True)
    await server.stop()
    return 0
