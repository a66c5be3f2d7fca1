"""The least an agent could be: a grpc.aio server whose one unary method runs the raw loop's handshake
(CERT_REQUIRED against the lab root, chain captured) and answers with the leaf's DER bytes, no protobuf,
no logging, no judging. What it achieves against the same target, driven like the agent, is the best any
agent reached over gRPC could do on this machine.

    python bench/grpc_floor_server.py CAFILE TARGET_PORT    (prints "listening PORT", serves until killed)
"""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import signal
import ssl
import sys

import grpc

LOOPBACK = "127.0.0.1"
METHOD = "/tlsfleet.bench.Floor/Handshake"
HANDSHAKE_TIMEOUT_S = 10.0


def _identity(data: bytes) -> bytes:
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

    handler = grpc.method_handlers_generic_handler(
        "tlsfleet.bench.Floor",
        {
            "Handshake": grpc.unary_unary_rpc_method_handler(handshake, _identity, _identity),
            "Stream": grpc.stream_stream_rpc_method_handler(stream, _identity, _identity),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    print(f"listening {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
