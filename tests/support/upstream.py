"""The servers of the tests' small internet, run inside its namespace (see
:mod:`tests.support.internet`): ``python -m tests.support.upstream CONFIG.json``.

HTTP on every (address, port) of the config, each answering who it is:

- ``GET /bytes/N``: N bytes (``x``), with a Content-Length, for bandwidth tests;
- ``GET /drip``: a response that never ends, a line every 0.2 s, to hold a TCP connection
  open (``GET /drips`` says how many are open now);
- ``POST /sink``: reads the body and answers how many bytes it got (uploads);
- anything else: ``{"address", "port", "host", "path"}`` as JSON.

DNS (UDP and TCP, dnslib for the wire format) on each resolver of the config: an
authoritative server for the test zone (A, CNAME, TXT, ``*.name`` wildcards one label
deep; NOERROR with no answer for other
types of a known name; NXDOMAIN for the rest; never an answer for the zone's ``blackhole``
names, so a forwarder times out), or a *liar* that answers every A query with one address.
UDP answers over 512 bytes are truncated (TC), as a real server does, so clients retry over
TCP. Every query is appended to the config's log as ``resolver name qtype client`` lines.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
from pathlib import Path
from typing import Any

from dnslib import CNAME, QTYPE, RCODE, RR, TXT, A, DNSError, DNSHeader, DNSRecord

HEAD_LIMIT = 16 * 1024
CHUNK = b"x" * 65536


class Http:
    def __init__(self) -> None:
        self.drips = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, *_ = [*lines[0].split(" "), "", ""]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        address, port = writer.get_extra_info("sockname")[:2]
        try:
            await self._respond(reader, writer, method, path, headers, address, port)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _respond(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        headers: dict[str, str],
        address: str,
        port: int,
    ) -> None:
        if path.startswith("/bytes/"):
            size = int(path.removeprefix("/bytes/") or 0)
            writer.write(_head(200, "application/octet-stream", size))
            while size > 0:
                writer.write(CHUNK[: min(size, len(CHUNK))])
                size -= len(CHUNK)
                await writer.drain()
            return
        if path == "/drip":
            writer.write(_head(200, "text/plain", None))
            self.drips += 1
            try:
                while True:
                    writer.write(b"tick\n")
                    await writer.drain()
                    await asyncio.sleep(0.2)
            finally:
                self.drips -= 1
        if method == "POST" and path == "/sink":
            left = int(headers.get("content-length", "0"))
            got = 0
            while got < left:
                data = await reader.read(min(65536, left - got))
                if not data:
                    break
                got += len(data)
            body = json.dumps({"received": got}).encode()
        elif path == "/drips":
            body = json.dumps({"open": self.drips}).encode()
        else:
            who = {"address": address, "port": port, "host": headers.get("host", ""), "path": path}
            body = json.dumps(who).encode()
        writer.write(_head(200, "application/json", len(body)) + body)
        await writer.drain()


def _head(status: int, content_type: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} OK", f"Content-Type: {content_type}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Zone:
    """``records``: ``{name: {"a": [...], "cname": str, "txt": [...], "ttl": int}}``."""

    def __init__(self, records: dict[str, dict[str, Any]], blackhole: list[str]) -> None:
        self.records = {name.lower().rstrip("."): record for name, record in records.items()}
        self.blackhole = {name.lower().rstrip(".") for name in blackhole}

    def _record(self, name: str) -> dict[str, Any] | None:
        """The record of ``name``, or of the wildcard ``*.parent`` that covers it."""
        if name in self.records:
            return self.records[name]
        parent = name.partition(".")[2]
        return self.records.get(f"*.{parent}") if parent else None

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        reply = request.reply()  # aa=1: this server is the zone's authority
        name = str(request.q.qname).lower().rstrip(".")
        if name in self.blackhole:
            return None
        qtype = request.q.qtype
        seen = set()
        while (record := self._record(name)) is not None and name not in seen:
            seen.add(name)
            ttl = int(record.get("ttl", 300))
            if "cname" in record:
                reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(record["cname"]), ttl=ttl))
                if qtype == QTYPE.CNAME:
                    return reply
                name = record["cname"].lower().rstrip(".")
                continue
            if qtype in (QTYPE.A, QTYPE.ANY):
                for address in record.get("a", []):
                    reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=ttl))
            if qtype in (QTYPE.TXT, QTYPE.ANY):
                for text in record.get("txt", []):
                    reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(text), ttl=ttl))
            return reply
        if not seen:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class Liar:
    def __init__(self, address: str) -> None:
        self.address = address

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()
        if request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(self.address), ttl=60))
        return reply


class Dns(asyncio.DatagramProtocol):
    def __init__(self, source: Zone | Liar, address: str, log: Path) -> None:
        self.source = source
        self.address = address
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def reply(self, data: bytes, client: str) -> DNSRecord | None:
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError):
            return None
        with self.log.open("a") as log:
            log.write(
                f"{self.address} {str(request.q.qname).rstrip('.')} "
                f"{QTYPE.get(request.q.qtype)} {client}\n"
            )
        return self.source.answer(request)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.reply(data, addr[0])
        if reply is None or self.transport is None:
            return
        packed = reply.pack()
        if len(packed) > 512:
            # What real servers send: the header with TC and the question, no records.
            truncated = DNSRecord(DNSHeader(id=reply.header.id, qr=1, aa=1, ra=1, tc=1), q=reply.q)
            packed = truncated.pack()
        self.transport.sendto(packed, addr)

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.reply(
                    await reader.readexactly(length), writer.get_extra_info("peername")[0]
                )
                if reply is None:
                    continue
                packed = reply.pack()
                writer.write(struct.pack("!H", len(packed)) + packed)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    loop = asyncio.get_running_loop()
    http = Http()
    servers = []
    for address, port in config.get("http", []):
        servers.append(await asyncio.start_server(http.serve, address, port, limit=HEAD_LIMIT))
    log = Path(config.get("dns_log", "/dev/null"))
    for resolver in config.get("dns", []):
        address = resolver["address"]
        source: Zone | Liar = (
            Liar(resolver["lie"])
            if resolver.get("lie")
            else Zone(resolver["zone"], resolver.get("blackhole", []))
        )
        protocol = Dns(source, address, log)
        await loop.create_datagram_endpoint(lambda p=protocol: p, local_addr=(address, 53))
        servers.append(await asyncio.start_server(protocol.serve_tcp, address, 53))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
