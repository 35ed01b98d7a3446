#!/usr/bin/env python3
"""An independent TAK QUIC client for gateway tests, built on aioquic.

It does what ATAK 5.5 does on a server connection with protocol `quic`
(../shared/specs/tak-quic.md §6): QUIC v1, ALPN `takstream` (or --alpn),
a client certificate (--cert/--key, optional to test refusals), the server
verified against --ca; one bidirectional stream, on which it writes a CoT
ping at once (the server learns of the stream only from the client's first
bytes), then XML CoT; with --proto it answers the server's t-x-takp-v offer
with a t-x-takp-q request and, after t-x-takp-r status=true, writes and
reads TAK protocol v1 stream frames (0xbf varint TakMessage, by takproto).

Output (stdout), one JSON object per line:
  {"uid", "type", "callsign", "remarks", "format"} per CoT event received,
  {"negotiated": true} when protobuf was agreed, {"pong": true} per pong,
  {"done": true, "sent": N, "received": M, "error": ...} last.
Exit status: 0 on success, 2 when the connection could not be made.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
import xml.etree.ElementTree as ET

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated
import takproto

sys.path.insert(0, os.path.dirname(__file__))
from peer import emit, ping_event, position_report, read_stream_frame, summarize  # noqa: E402


def request_event(uid: str) -> bytes:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    return (
        f"<event version='2.0' uid='{uid}' type='t-x-takp-q' time='{now}' start='{now}' "
        f"stale='{stale}' how='m-g'><point lat='0.0' lon='0.0' hae='0.0' ce='999999' "
        f"le='999999'/><detail><TakControl><TakRequest version='1'/></TakControl>"
        f"</detail></event>"
    ).encode()


async def run(a) -> int:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[a.alpn], server_name=a.server_name,
                            verify_mode=ssl.CERT_REQUIRED, idle_timeout=a.idle)
    cfg.load_verify_locations(a.ca)
    if a.cert:
        cfg.load_cert_chain(a.cert, a.key)
    sent = received = 0
    state = {"proto": False, "negotiated": asyncio.Event(), "eof": False}
    try:
        async with connect(a.host, a.port, configuration=cfg, wait_connected=True) as client:
            if client._quic.tls.alpn_negotiated != a.alpn:
                emit({"done": True, "sent": 0, "received": 0, "error": f"ALPN {client._quic.tls.alpn_negotiated!r}"})
                return 2
            reader, writer = await client.create_stream()
            # ATAK: "tak server's quic support ... won't send data to us until we send something"
            writer.write(ping_event(a.uid))
            got_from = {}

            async def read_loop():
                nonlocal received
                while True:
                    try:
                        raw = await read_stream_frame(reader)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        state["eof"] = True
                        return
                    if raw[:1] == b"\xbf":
                        info = summarize(raw)
                    else:
                        root = ET.fromstring(raw.lstrip())
                        t = root.get("type")
                        if t == "t-x-takp-v":
                            if a.proto:
                                writer.write(request_event(root.get("uid")))
                            continue
                        if t == "t-x-takp-r":
                            ok = root.find("detail/TakControl/TakResponse").get("status") == "true"
                            if ok:
                                state["proto"] = True
                                emit({"negotiated": True})
                                state["negotiated"].set()
                            continue
                        info = summarize(raw)
                    if info["type"] == "t-x-c-t-r":
                        emit({"pong": True})
                        continue
                    received += 1
                    emit(info)
                    got_from[info["uid"]] = got_from.get(info["uid"], 0) + 1

            reading = asyncio.ensure_future(read_loop())
            if a.proto:
                await asyncio.wait_for(state["negotiated"].wait(), 20)
            if a.go_file:
                while not os.path.exists(a.go_file):
                    await asyncio.sleep(0.02)
            for i in range(1, a.send + 1):
                xml = position_report(a.uid, a.callsign, i, 60)
                writer.write(bytes(takproto.xml2proto(xml, takproto.TAKProtoVer.STREAM)) if state["proto"] else xml)
                sent += 1
                await asyncio.sleep(a.interval)
            if a.fin:
                # A FIN is not a logout for TAK Server: the session stays and we keep reading.
                writer.write_eof()
            deadline = time.time() + a.listen
            while time.time() < deadline and not reading.done():
                if a.expect_from and got_from.get(a.expect_from, 0) >= a.expect:
                    break
                await asyncio.sleep(0.05)
            reading.cancel()
            # In TLS 1.3 the client's handshake completes before the server has checked the
            # client's certificate: a refusal arrives as a CONNECTION_CLOSE right after.
            ev = getattr(client._quic, "_close_event", None)
            if isinstance(ev, ConnectionTerminated) and ev.error_code != 0:
                emit({"done": True, "sent": sent, "received": received,
                      "error": f"closed by the server: error 0x{ev.error_code:x} {ev.reason_phrase!r}"})
                return 2
            emit({"done": True, "sent": sent, "received": received, "eof": state["eof"], "proto": state["proto"]})
            return 0
    except (ConnectionError, asyncio.TimeoutError, OSError) as e:
        emit({"done": True, "sent": sent, "received": received, "error": f"{type(e).__name__}: {e}".strip()})
        return 2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--alpn", default="takstream")
    p.add_argument("--uid", default="QUIC-1")
    p.add_argument("--callsign", default="QUIC")
    p.add_argument("--send", type=int, default=0)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--proto", action="store_true", help="negotiate TAK protocol v1")
    p.add_argument("--fin", action="store_true", help="finish our side after sending, keep reading")
    p.add_argument("--listen", type=float, default=2.0, help="seconds to read after sending")
    p.add_argument("--expect-from", help="stop reading early once --expect events from this uid arrived")
    p.add_argument("--expect", type=int, default=1)
    p.add_argument("--go-file", help="wait until this file exists before sending")
    p.add_argument("--idle", type=float, default=100.0, help="QUIC idle timeout (ATAK: 100 s)")
    a = p.parse_args()
    return asyncio.run(run(a))


if __name__ == "__main__":
    sys.exit(main())
