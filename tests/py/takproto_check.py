#!/usr/bin/env python3
"""Reference decoder: what does the PyPI `takproto` package make of our inputs?

Two modes, each printing one JSON object per input on stdout:

  takproto_check.py [--with-hex] FILE.xml...
      For each CoT XML file: takproto.xml2proto(xml, TAKProtoVer.MESH), then
      decode that frame again with takproto.parse_proto() and print
        {"file": ..., "framing": "mesh", "frame_len": N, "fields": {...}}
      (--with-hex adds "frame_hex"), or {"file": ..., "error": "..."}.

  takproto_check.py --decode-hex [FILE...|-]
      Each non-empty line of each file (stdin if no file or "-") is one
      hex-encoded TAK protocol v1 frame: mesh `bf 01 bf <TakMessage>` or
      stream `bf <varint len> <TakMessage>` (spaces allowed). Prints
        {"file": ..., "line": K, "framing": "mesh"|"stream", "fields": {...}}
      or {"file": ..., "line": K, "error": "..."}.

"fields" is google.protobuf.json_format.MessageToDict(msg,
preserving_proto_field_name=True): fields equal to their proto3 default are
omitted, and 64-bit integers (sendTime, startTime, staleTime) are JSON
strings, as the protobuf JSON mapping requires.

Exit status: 0 if every input decoded, 1 if any failed.
"""

import argparse
import json
import sys

import takproto
from google.protobuf.json_format import MessageToDict
from google.protobuf.internal.decoder import _DecodeVarint

MESH_HEADER = b"\xbf\x01\xbf"


def fields_of(msg):
    """Decoded TakMessage as a plain dict, proto field names kept."""
    return MessageToDict(msg, preserving_proto_field_name=True)


def framing_of(frame: bytes) -> str:
    if frame[:3] == MESH_HEADER:
        return "mesh"
    if frame[:1] == b"\xbf":
        return "stream"
    return "unknown"


def decode_frame(frame: bytes) -> dict:
    """Decode one mesh/stream frame with takproto.parse_proto()."""
    out = {"framing": framing_of(frame), "frame_len": len(frame)}
    if out["framing"] == "unknown":
        raise ValueError("not a TAK protocol v1 frame (first byte is not 0xbf)")
    if out["framing"] == "stream":
        # takproto ignores bytes after the declared length; we report them.
        length, pos = _DecodeVarint(frame, 1)
        if pos + length != len(frame):
            out["length_mismatch"] = {"declared": length, "available": len(frame) - pos}
    msg = takproto.parse_proto(bytearray(frame))
    if msg is None:
        raise ValueError("takproto.parse_proto returned None")
    out["fields"] = fields_of(msg)
    return out


def check_xml(path: str, with_hex: bool) -> dict:
    with open(path, "rb") as fh:
        data = fh.read()
    frame = bytes(takproto.xml2proto(data, takproto.TAKProtoVer.MESH))
    out = {"file": path}
    out.update(decode_frame(frame))
    if with_hex:
        out["frame_hex"] = frame.hex()
    return out


def hex_lines(paths):
    """Yield (name, line_no, text) for every non-empty input line."""
    if not paths:
        paths = ["-"]
    for path in paths:
        if path == "-":
            lines, name = sys.stdin.read().splitlines(), "<stdin>"
        else:
            with open(path, "r", encoding="ascii") as fh:
                lines, name = fh.read().splitlines(), path
        for no, line in enumerate(lines, 1):
            text = "".join(line.split())
            if text and not text.startswith("#"):
                yield name, no, text


def err(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", help="CoT XML files (or hex files with --decode-hex)")
    ap.add_argument("--decode-hex", action="store_true",
                    help="inputs are hex-encoded TAK protobuf frames, one per line")
    ap.add_argument("--with-hex", action="store_true",
                    help="XML mode: also print the mesh frame takproto produced")
    args = ap.parse_args()

    failed = 0
    if args.decode_hex:
        for name, no, text in hex_lines(args.files):
            out = {"file": name, "line": no}
            try:
                out.update(decode_frame(bytes.fromhex(text)))
            except Exception as exc:  # report every takproto/protobuf failure
                out["error"] = err(exc)
                failed += 1
            print(json.dumps(out, ensure_ascii=False), flush=True)
    else:
        if not args.files:
            ap.error("give CoT XML files, or --decode-hex")
        for path in args.files:
            try:
                out = check_xml(path, args.with_hex)
            except Exception as exc:
                out = {"file": path, "error": err(exc)}
                failed += 1
            print(json.dumps(out, ensure_ascii=False), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
