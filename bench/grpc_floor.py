"""The least an agent could be: a grpc.aio server that runs the raw loop's handshake (CERT_REQUIRED against
the lab root, chain captured) for each request, the server name as the request's bytes, and answers with
the leaf's DER: no protobuf, no logging, no judging. `Handshake` takes a unary call each, as `Probe` does;
`Stream` takes the requests as the messages of one stream and answers each as its handshake ends. What
these reach against the same target is the best any agent answering over gRPC could do on this machine.

    with floor_servers(CAFILE, TARGET_PORT, COUNT) as servers: FloorClient(servers.addresses) ...
    python bench/grpc_floor.py CAFILE TARGET_PORT     (one server: prints "listening PORT", serves until SIGTERM)
"""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
from common import LOOPBACK, cpu_seconds

SERVICE = "tlsfleet.bench.Floor"
HANDSHAKE_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 20.0
STREAM_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class FloorServers:
    addresses: tuple[str, ...]
    pids: tuple[int, ...]


@contextlib.contextmanager
def floor_servers(cafile: str, target_port: int, count: int) -> Iterator[FloorServers]:
    """`count` floor servers, each a process of its own against 127.0.0.1:`target_port`, stopped after."""
    processes: list[subprocess.Popen[str]] = []
    try:
        addresses = []
        for _ in range(count):
            process = subprocess.Popen(
                [sys.executable, __file__, cafile, str(target_port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
            processes.append(process)
            assert process.stdout is not None
            line = process.stdout.readline().split()
            if len(line) != 2 or line[0] != "listening":
                raise RuntimeError(f"a gRPC floor server did not start (it printed {line!r})")
            addresses.append(f"{LOOPBACK}:{line[1]}")
        yield FloorServers(tuple(addresses), tuple(p.pid for p in processes))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class FloorRun:
    answered: int  # requests answered with a leaf
    elapsed_s: float
    cpu_s: dict[str, float]  # CPU used during the run, by the role of each process measured


async def measure_floor(
    addresses: Sequence[str], names: Sequence[str], total: int, in_flight: int, warmup: int, pids: Mapping[str, int]
) -> dict[str, FloorRun]:
    """`total` handshakes through the floor servers at `addresses`, a unary call each ("unary") and then as
    messages of one stream per server ("stream"), each after `warmup` of its own; the CPU of `pids`."""
    client = FloorClient(addresses)
    runs = {}
    try:
        await client.ready()
        for mode, drive in (("unary", client.unary), ("stream", client.stream)):
            await drive(names, warmup, min(in_flight, warmup))
            cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
            started = time.perf_counter()
            async with asyncio.timeout(STREAM_TIMEOUT_S):
                answered = await drive(names, total, in_flight)
            elapsed = time.perf_counter() - started
            runs[mode] = FloorRun(answered, elapsed, {r: cpu_seconds(p) - cpu_before[r] for r, p in pids.items()})
    finally:
        await client.close()
    return runs


class FloorClient:
    """Drives floor servers with `in_flight` requests outstanding, spread over one channel per server;
    each method returns how many requests were answered with a leaf."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self._channels = [grpc.aio.insecure_channel(address) for address in addresses]

    async def ready(self) -> None:
        for channel in self._channels:
            await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def unary(self, names: Sequence[str], total: int, in_flight: int) -> int:
        """`total` calls of `Handshake`, the i-th to server i mod n with server name i mod len(names)."""
        calls = [channel.unary_unary(f"/{SERVICE}/Handshake") for channel in self._channels]
        remaining, answered = total, 0

        async def worker() -> None:
            nonlocal remaining, answered
            while remaining > 0:
                remaining -= 1
                call = calls[remaining % len(calls)]
                if await call(names[remaining % len(names)].encode(), timeout=CALL_TIMEOUT_S):
                    answered += 1

        await asyncio.gather(*(worker() for _ in range(min(in_flight, total))))
        return answered

    async def stream(self, names: Sequence[str], total: int, in_flight: int) -> int:
        """`total` requests as the messages of one `Stream` per server, shared out evenly."""
        count = len(self._channels)
        shares = [total // count + (i < total % count) for i in range(count)]
        windows = [max(1, in_flight // count)] * count
        answered = await asyncio.gather(
            *(self._one_stream(c, names, n, w) for c, n, w in zip(self._channels, shares, windows, strict=True))
        )
        return sum(answered)

    @staticmethod
    async def _one_stream(channel: grpc.aio.Channel, names: Sequence[str], total: int, window: int) -> int:
        if total == 0:
            return 0
        asks: asyncio.Queue[bytes | None] = asyncio.Queue()
        sent = min(window, total)
        for i in range(sent):
            asks.put_nowait(names[i % len(names)].encode())
        received = answered = 0

        async def requests() -> AsyncIterator[bytes]:
            while (ask := await asks.get()) is not None:
                yield ask

        async for answer in channel.stream_stream(f"/{SERVICE}/Stream")(requests(), timeout=STREAM_TIMEOUT_S):
            received += 1
            answered += bool(answer)
            if sent < total:
                asks.put_nowait(names[sent % len(names)].encode())
                sent += 1
            elif received == total:
                asks.put_nowait(None)
        return answered


def identity(data: bytes) -> bytes:
    """Bytes on the wire as they are: no protobuf."""
    return data


async def serve(cafile: str, target_port: int) -> None:
    context = ssl.create_default_context(cafile=cafile)

    async def handshake(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            _reader, writer = await asyncio.open_connection(
                LOOPBACK, target_port, ssl=context, server_hostname=request.decode()
            )
        chain = writer.get_extra_info("ssl_object")._sslobj.get_unverified_chain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return chain[0].public_bytes(_ssl.ENCODING_DER) if chain else b""

    async def stream(requests, context):
        # Each request answered as its handshake ends, as many at once as the client keeps outstanding.
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        pending: set[asyncio.Task] = set()

        async def one(request: bytes) -> None:
            await queue.put(await handshake(request, context))

        async def read() -> None:
            async for request in requests:
                task = asyncio.create_task(one(request))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            await queue.put(None)

        reader = asyncio.create_task(read())
        while (answer := await queue.get()) is not None:
            yield answer
        await reader

    await serve_until_terminated(
        SERVICE,
        {
            "Handshake": grpc.unary_unary_rpc_method_handler(handshake, identity, identity),
            "Stream": grpc.stream_stream_rpc_method_handler(stream, identity, identity),
        },
    )


async def serve_until_terminated(service: str, methods: dict[str, grpc.RpcMethodHandler]) -> None:
    """A bare insecure grpc.aio server on loopback with `methods` of `service`: prints "listening PORT"
    once it serves, and serves until SIGTERM."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    print(f"listening {port}", flush=True)
    await until_terminated()
    await server.stop(None)


async def until_terminated() -> None:
    """Return once this process is sent SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
