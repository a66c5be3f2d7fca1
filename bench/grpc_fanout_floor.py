"""The least a dial-out fan-out could cost: a bare grpc.aio server holding one bidirectional stream per
agent (each agent its own HTTP/2 connection, from a swarm process), and a unary method that sends one small
message down the first N streams and answers when every reply is back. A client process asks for 10 and
then for many; the ratio of the two is the best any coordinator answering over gRPC could reach on this
machine. No TLS, no protobuf, no probe: bytes in and out.

    from grpc_fanout_floor import fanout_floor; fanout_floor(1000, 7)      (p50 ms for 10 and for 1000)
    python bench/grpc_fanout_floor.py serve | swarm ADDRESS COUNT         (the two processes it starts)
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from common import LOOPBACK
from grpc_floor import identity, serve_until_terminated, until_terminated

SERVICE = "tlsfleet.bench.FanoutFloor"
CONNECT_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 60.0
SMALL = 10
PAYLOAD = b"x" * 64


@dataclass(frozen=True)
class FloorFanout:
    small_p50_ms: float
    large_p50_ms: float
    agents: int


def fanout_floor(agents: int, runs: int) -> FloorFanout:
    """p50 of `runs` fan-outs to 10 and to `agents` streams, the two processes started and stopped here."""
    server = subprocess.Popen([sys.executable, __file__, "serve"], stdout=subprocess.PIPE, text=True)
    swarm: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None
        address = f"{LOOPBACK}:{server.stdout.readline().split()[1]}"
        swarm = subprocess.Popen([sys.executable, __file__, "swarm", address, str(agents)])
        return asyncio.run(_measure(address, agents, runs))
    finally:
        for process in (swarm, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def _measure(address: str, agents: int, runs: int) -> FloorFanout:
    async with grpc.aio.insecure_channel(address) as channel:
        fan = channel.unary_unary(f"/{SERVICE}/Fan")
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while int(await fan(b"0", timeout=CALL_TIMEOUT_S)) < agents:  # b"0": how many are connected
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {agents} floor streams connected in {CONNECT_TIMEOUT_S:g} s")
            await asyncio.sleep(0.2)
        times: dict[int, list[float]] = {SMALL: [], agents: []}
        for _ in range(runs):
            for size in (SMALL, agents):
                started = time.perf_counter()
                await fan(str(size).encode(), timeout=CALL_TIMEOUT_S)
                times[size].append((time.perf_counter() - started) * 1000)
    return FloorFanout(statistics.median(times[SMALL]), statistics.median(times[agents]), agents)


async def _serve() -> None:
    streams: list[asyncio.Queue[asyncio.Future[bytes]]] = []

    async def connect(requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        asks: asyncio.Queue[asyncio.Future[bytes]] = asyncio.Queue()
        streams.append(asks)
        replies = requests.__aiter__()
        await replies.__anext__()  # the agent's hello
        while True:
            waiter = await asks.get()
            yield PAYLOAD
            waiter.set_result(await replies.__anext__())

    async def fan(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        size = int(request)
        if size == 0:
            return str(len(streams)).encode()
        chosen = streams[:size]
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in chosen]
        for asks, waiter in zip(chosen, waiters, strict=True):
            asks.put_nowait(waiter)
        await asyncio.gather(*waiters)
        return b"done"

    await serve_until_terminated(
        SERVICE,
        {
            "Connect": grpc.stream_stream_rpc_method_handler(connect, identity, identity),
            "Fan": grpc.unary_unary_rpc_method_handler(fan, identity, identity),
        },
    )


async def _swarm(address: str, count: int) -> None:
    async def agent() -> None:
        # Its own connection, as each dial-out agent has: no subchannel shared between channels.
        async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            call = channel.stream_stream(f"/{SERVICE}/Connect")(timeout=None)
            await call.write(b"hello")
            async for ask in call:
                await call.write(ask)

    tasks = [asyncio.create_task(agent()) for _ in range(count)]
    await until_terminated()
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(_serve())
    elif sys.argv[1:2] == ["swarm"] and len(sys.argv) == 4:
        asyncio.run(_swarm(sys.argv[2], int(sys.argv[3])))
    else:
        sys.exit("usage: grpc_fanout_floor.py serve | swarm ADDRESS COUNT")
