#!/usr/bin/env python3
"""A streaming LLM provider stand-in for bench_streaming.py: a bare asyncio HTTP/1.1 server
(keep-alive, chunked transfer coding) answering every POST with an OpenAI chat completion
stream, as fast as it can or paced.

    python bench/stream_standin.py --port 8101

The request's `model` says the stream's shape: `chunks-N` sends N content chunks (then the
finish chunk, the usage chunk and `data: [DONE]`), `chunks-N-gap-MS` waits MS milliseconds
before each content chunk. Each chunk is one HTTP chunk, written as soon as it is due. Nothing
but the standard library (uvloop when it is installed), so it costs the gateway's CPU nothing:
it runs as its own process, pinned apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

_MODEL = re.compile(r"chunks-(\d+)(?:-gap-(\d+))?")


def frames(model: str) -> tuple[list[bytes], float]:
    match = _MODEL.fullmatch(model)
    count, gap = (int(match.group(1)), int(match.group(2) or 0)) if match else (10, 0)
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0}
    head["model"] = model

    def chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
        body = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        body.update(extra)
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": "tok0 "})]
    out += [chunk({"content": f"tok{i} "}) for i in range(1, count)]
    out.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 10, "completion_tokens": count, "total_tokens": 10 + count}
    last = json.loads(chunk({})[6:])
    last["choices"], last["usage"] = [], usage
    out.append(b"data: " + json.dumps(last, separators=(",", ":")).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out, gap / 1000


HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length)) if length else {}
            shape, gap = frames(str(body.get("model", "")))
            writer.write(HEAD)
            for index, frame in enumerate(shape):
                if gap and index < len(shape) - 3:
                    await writer.drain()
                    await asyncio.sleep(gap)
                writer.write(b"%X\r\n%s\r\n" % (len(frame), frame))
                if gap:
                    await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    try:
        import uvloop

        uvloop.run(main(port))
    except ImportError:
        asyncio.run(main(port))
