#!/usr/bin/env python3
"""A scriptable TAK client for gateway tests, built on pytak's own transport code.

The connection is opened by pytak.protocol_factory(), exactly as pytak-based
apps do (tcp://, tls://, udp:// ...; +wo = write only, +ro = read only).
Sending goes through pytak.TXWorker.send_data(), so with --proto pytak itself
does the XML -> TAK protocol v1 conversion (takproto.xml2proto: mesh framing
for multicast destinations, stream framing otherwise).

Receiving:
  * tcp/tls, XML: pytak.RXWorker.readcot(), i.e. reader.readuntil(b"</event>").
  * tcp/tls, --proto: pytak's reader cannot split a protobuf stream (it still
    waits for b"</event>"), so we read `bf <varint len> <TakMessage>` frames
    from the same asyncio StreamReader ourselves; a frame that starts with
    '<' instead is read as XML up to </event>.
  * udp: pytak's datagram reader (reader.recv()); for a multicast group
    pytak binds the group port with SO_REUSEADDR/SO_REUSEPORT and joins the
    group (IP_ADD_MEMBERSHIP) on PYTAK_MULTICAST_LOCAL_ADDR (--mcast-if,
    default 127.0.0.1), which also becomes IP_MULTICAST_IF for sending.
    Each datagram is auto-detected: mesh protobuf (bf 01 bf) or XML.

URL cheat sheet:
  tcp://127.0.0.1:8087        stream, both directions
  tls://127.0.0.1:8089        needs --cert/--key (pytak always sends a client cert)
  udp+wo://127.0.0.1:4242     unicast datagrams, send only
  udp+ro://127.0.0.1:4242     bind 127.0.0.1:4242 and print what arrives
  udp://239.2.3.1:6969        multicast send + receive (we hear ourselves:
                              see --skip-own)
  udp+wo://239.2.3.1:6969 / udp+ro://239.2.3.1:6969   one direction only
  (plain udp:// to a unicast address binds the *destination* port locally,
  so use udp+wo:// to send to a gateway.)

Output (stdout), one JSON object per line:
  {"uid", "type", "callsign", "remarks", "raw_len", "format": "xml"|"proto"}
      for every CoT event received,
  {"error": ..., "raw_len": ..., "raw_head": ...} for undecodable input,
  {"done": true, "sent": N, "received": M, "errors": E, "eof": bool} last.
Exit status: 0 on success, 2 if the connection could not be opened (reason on
stderr), 3 if sending failed.
"""

import argparse
import asyncio
import configparser
import json
import sys
import time
import warnings
import xml.etree.ElementTree as ET

# pytak warns at import time that aiohttp (only needed for enrollment) is absent.
# Hostname checks are off unless --tls-hostname is given; pytak warns each time.
warnings.filterwarnings("ignore", message=".*aiohttp.*")
warnings.filterwarnings("ignore", message="Disabled TLS Server Common Name")
import pytak  # noqa: E402
import takproto  # noqa: E402
from google.protobuf.internal.decoder import _DecodeVarint

MESH_HEADER = b"\xbf\x01\xbf"


def emit(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


# --------------------------------------------------------------------------
# Building what we send
# --------------------------------------------------------------------------

def position_report(uid: str, callsign: str, seq: int, stale: int, group: str = "Cyan") -> bytes:
    """An ATAK-style SA event; seq makes every event distinguishable."""
    detail = ET.Element("detail")
    ET.SubElement(detail, "takv", device="peer.py", platform="pytak",
                  os="linux", version="1")
    ET.SubElement(detail, "contact", callsign=callsign,
                  endpoint="*:-1:stcp")
    ET.SubElement(detail, "__group", name=group, role="Team Member")
    remarks = ET.SubElement(detail, "remarks")
    remarks.text = f"seq={seq}"
    event = pytak.cot_event(
        lat=37.0 + seq * 0.0001, lon=-122.0, hae=10, ce=5, le=5,
        uid=uid, stale=stale, cot_type="a-f-G-U-C", how="m-g", detail=detail,
    )
    return pytak.serialize_cot(event)


def ping_event(uid: str) -> bytes:
    """A TAK client ping (type t-x-c-t), as ATAK sends to its server."""
    event = pytak.cot_event(uid=f"{uid}-ping", cot_type="t-x-c-t",
                            how="h-g-i-g-o", stale=20,
                            detail=ET.Element("detail"))
    return pytak.serialize_cot(event)


# --------------------------------------------------------------------------
# Decoding what we receive
# --------------------------------------------------------------------------

def summarize_xml(raw: bytes) -> dict:
    text = raw.lstrip()
    root = ET.fromstring(text)
    if root.tag != "event":
        raise ValueError(f"root element is <{root.tag}>, not <event>")
    contact = root.find("detail/contact")
    remarks = root.find("detail/remarks")
    return {
        "uid": root.get("uid"),
        "type": root.get("type"),
        "callsign": contact.get("callsign") if contact is not None else None,
        "remarks": remarks.text if remarks is not None else None,
        "raw_len": len(raw),
        "format": "xml",
    }


def summarize_proto(raw: bytes) -> dict:
    msg = takproto.parse_proto(bytearray(raw))
    if msg is None:
        raise ValueError("takproto.parse_proto could not decode the frame")
    cot = msg.cotEvent
    remarks = None
    if cot.detail.xmlDetail:
        frag = ET.fromstring(f"<x>{cot.detail.xmlDetail}</x>")
        node = frag.find("remarks")
        remarks = node.text if node is not None else None
    return {
        "uid": cot.uid,
        "type": cot.type,
        "callsign": cot.detail.contact.callsign or None,
        "remarks": remarks,
        "raw_len": len(raw),
        "format": "proto",
    }


def summarize(raw: bytes) -> dict:
    if raw[:1] == b"\xbf":
        return summarize_proto(raw)
    return summarize_xml(raw)


async def read_stream_frame(reader: asyncio.StreamReader) -> bytes:
    """One message from a TAK stream: `bf <varint len> <body>` or XML."""
    first = await reader.readexactly(1)
    while first in b" \t\r\n":
        first = await reader.readexactly(1)
    if first != b"\xbf":
        return first + await reader.readuntil(b"</event>")
    header = bytearray(first)
    while True:
        byte = await reader.readexactly(1)
        header += byte
        if not byte[0] & 0x80:
            break
    length, _ = _DecodeVarint(bytes(header), 1)
    return bytes(header) + await reader.readexactly(length)


class Receiver:
    """Reads messages from a pytak reader and prints one JSON line each."""

    def __init__(self, reader, config, proto: bool, skip_uid):
        self.reader = reader
        self.proto = proto
        self.skip_uid = skip_uid
        self.received = 0
        self.errors = 0
        self.eof = False
        # pytak's own reader; XML mode (TAK_PROTO=0) so readcot returns raw bytes.
        xml_config = dict(config)
        xml_config["TAK_PROTO"] = "0"
        self.rx = pytak.RXWorker(asyncio.Queue(), xml_config, reader)

    async def next_message(self):
        if hasattr(self.reader, "recv"):          # pytak datagram reader
            data, _addr = await self.reader.recv()
            return data
        if self.proto:                             # protobuf stream
            return await read_stream_frame(self.reader)
        data = await self.rx.readcot()             # readuntil(b"</event>")
        if data is None:
            raise asyncio.IncompleteReadError(b"", None)
        return data

    async def run(self):
        while True:
            try:
                raw = await self.next_message()
            except (asyncio.IncompleteReadError, ConnectionError,
                    pytak.asyncio_dgram.TransportClosed):
                self.eof = True
                return
            try:
                summary = summarize(raw)
            except Exception as exc:  # print and go on: tests look at these
                self.errors += 1
                emit({"error": f"{type(exc).__name__}: {exc}", "raw_len": len(raw),
                      "raw_head": raw[:120].decode("utf-8", "replace")})
                continue
            if self.skip_uid and summary["uid"] == self.skip_uid:
                continue
            self.received += 1
            emit(summary)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def build_config(args) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.add_section("peer")
    cfg = parser["peer"]
    cfg["COT_URL"] = args.url
    cfg["TAK_PROTO"] = "1" if args.proto else "0"
    cfg["PYTAK_MULTICAST_LOCAL_ADDR"] = args.mcast_if
    if args.cert:
        cfg["PYTAK_TLS_CLIENT_CERT"] = args.cert
    if args.key:
        cfg["PYTAK_TLS_CLIENT_KEY"] = args.key
    if args.password:
        cfg["PYTAK_TLS_CLIENT_PASSWORD"] = args.password
    if args.ca:
        cfg["PYTAK_TLS_CLIENT_CAFILE"] = args.ca
    if args.tls_hostname:
        cfg["PYTAK_TLS_SERVER_EXPECTED_HOSTNAME"] = args.tls_hostname
    else:
        cfg["PYTAK_TLS_DONT_CHECK_HOSTNAME"] = "1"
    if args.insecure:
        cfg["PYTAK_TLS_DONT_VERIFY"] = "1"
    return cfg


async def run(args) -> int:
    config = build_config(args)
    try:
        reader, writer = await asyncio.wait_for(
            pytak.protocol_factory(config), timeout=args.connect_timeout)
    except Exception as exc:
        print(f"peer.py: cannot open {args.url}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2

    receiver = None
    rx_task = None
    if reader is not None:
        receiver = Receiver(reader, config, args.proto,
                            args.uid if args.skip_own else None)
        rx_task = asyncio.ensure_future(receiver.run())

    sent = 0
    status = 0
    if args.go_file:
        # The test says when everyone is connected (it creates the file).
        while not __import__("os").path.exists(args.go_file):
            await asyncio.sleep(0.02)
    if args.send_xml:
        with open(args.send_xml, "rb") as fh:
            payloads = [fh.read()] * (args.send if args.send is not None else 1)
    else:
        payloads = None
    count = len(payloads) if payloads is not None else (args.send or 0)
    if count and writer is None:
        print(f"peer.py: {args.url} is read-only, cannot send", file=sys.stderr)
        status = 3
        count = 0
    tx = pytak.TXWorker(asyncio.Queue(), config, writer) if writer is not None else None
    try:
        if args.ping and tx is not None:
            await tx.send_data(ping_event(args.uid))
        for k in range(count):
            if k and args.interval:
                await asyncio.sleep(args.interval)
            data = payloads[k] if payloads is not None else \
                position_report(args.uid, args.callsign, k + 1, args.stale, args.group)
            await tx.send_data(data)
            sent += 1
    except Exception as exc:
        print(f"peer.py: send failed after {sent} events: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        status = 3

    if rx_task is not None:
        deadline = time.monotonic() + args.listen
        while time.monotonic() < deadline and not rx_task.done():
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        rx_task.cancel()
        try:
            await rx_task
        except asyncio.CancelledError:
            pass

    for end in {id(x): x for x in (reader, writer) if x is not None}.values():
        try:
            end.close()
        except Exception:
            pass
    if writer is not None and hasattr(writer, "wait_closed"):
        try:
            await asyncio.wait_for(writer.wait_closed(), 1)
        except Exception:
            pass

    emit({"done": True, "sent": sent,
          "received": receiver.received if receiver else 0,
          "errors": receiver.errors if receiver else 0,
          "eof": receiver.eof if receiver else False})
    return status


def main() -> int:
    ap = argparse.ArgumentParser(
        description="TAK test peer built on pytak (see module docstring).")
    ap.add_argument("--url", required=True, help="pytak COT_URL, e.g. tcp://127.0.0.1:8087")
    ap.add_argument("--cert", help="TLS client certificate (PEM or .p12)")
    ap.add_argument("--key", help="TLS client private key (PEM)")
    ap.add_argument("--password", help="password of a .p12 --cert")
    ap.add_argument("--ca", help="CA file used to verify the server")
    ap.add_argument("--tls-hostname", help="check the server certificate against this "
                    "name (default: hostname not checked)")
    ap.add_argument("--insecure", action="store_true",
                    help="do not verify the server certificate at all")
    ap.add_argument("--uid", default="peer-1")
    ap.add_argument("--callsign", default="PEER1")
    ap.add_argument("--group", default="Cyan", help="the __group of the position reports sent")
    ap.add_argument("--send", type=int, default=None,
                    help="number of events to send (default 0; 1 with --send-xml)")
    ap.add_argument("--interval", type=float, default=0.0, help="seconds between sends")
    ap.add_argument("--listen", type=float, default=0.0,
                    help="seconds to keep reading after the last send")
    ap.add_argument("--send-xml", help="send this file's bytes instead of generated events")
    ap.add_argument("--proto", action="store_true",
                    help="TAK protocol v1: pytak TAK_PROTO=1 (takproto) for sending; "
                    "read stream frames as protobuf")
    ap.add_argument("--ping", action="store_true", help="send one t-x-c-t ping first")
    ap.add_argument("--go-file", help="wait until this file exists before sending")
    ap.add_argument("--stale", type=int, default=120, help="stale seconds for generated events")
    ap.add_argument("--mcast-if", default="127.0.0.1",
                    help="PYTAK_MULTICAST_LOCAL_ADDR: interface address for multicast")
    ap.add_argument("--skip-own", action="store_true",
                    help="do not print/count received events whose uid is --uid "
                    "(multicast loops our own datagrams back)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    args = ap.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
