"""A NAT with latency, for bench/nat.sh (the kernel here has no `tc netem`).

Listens on LISTEN_IP at each given port and forwards every connection to TARGET_IP at the
same port, from SOURCE_IP (so every IQ behind it shares one address, as behind a site's
NAT), delaying each direction by DELAY_MS (one way: the round trip grows by twice that).
Order is kept; a half-close is passed on after the same delay.

    python3 delay_nat.py LISTEN_IP TARGET_IP SOURCE_IP DELAY_MS PORT [PORT...]
"""

import asyncio
import sys


async def pipe(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except OSError:
            await queue.put((loop.time() + delay, None))

    async def write():
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    writer.transport.abort()
                    return
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except OSError:
            return

    await asyncio.gather(read(), write())


async def main():
    listen_ip, target_ip, source_ip, delay_ms = sys.argv[1:5]
    ports = [int(p) for p in sys.argv[5:]]
    delay = float(delay_ms) / 1000.0

    def handler_for(port):
        async def handle(down_r, down_w):
            # The SYN crosses the link too.
            await asyncio.sleep(delay)
            try:
                up_r, up_w = await asyncio.open_connection(
                    target_ip, port, local_addr=(source_ip, 0)
                )
            except OSError:
                down_w.transport.abort()
                return
            try:
                await asyncio.gather(pipe(down_r, up_w, delay), pipe(up_r, down_w, delay))
            finally:
                up_w.transport.abort()
                down_w.transport.abort()

        return handle

    servers = [
        await asyncio.start_server(handler_for(p), listen_ip, p, backlog=1024) for p in ports
    ]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
