"""A Marti API client as ATAK uses it for files, in plain Python (ssl + http.client): HTTPS
with a client certificate, verified against the CA. Runs the requests given as a JSON list
and prints one JSON line per answer, then {"done": n}.

Each request: {"method", "path" (or "url": a full URL, whose host and port are used),
optional "body" (text), "body_b64" (bytes), "json" (an object), "multipart": {"field",
"filename", "content_type", "b64"}, "content_type"}.
Each answer: {"status", "length", "sha256", "content_type", "disposition", "text" (when
the body is UTF-8 and under 64 KiB), "json" (when it parses)}.

usage: marti_client.py --host H --port P --ca CA --cert CERT --key KEY REQUESTS_JSON
"""

import argparse
import base64
import hashlib
import http.client
import json
import ssl
import sys
import urllib.parse
import uuid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("requests")
    a = ap.parse_args()
    ctx = ssl.create_default_context(cafile=a.ca)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    n = 0
    for r in json.loads(a.requests):
        host, port, path = a.host, a.port, r.get("path", "/")
        if "url" in r:
            u = urllib.parse.urlsplit(r["url"])
            port = u.port or 443
            path = u.path + ("?" + u.query if u.query else "")
        headers = {}
        body = None
        if "json" in r:
            body = json.dumps(r["json"]).encode()
            headers["Content-Type"] = "application/json"
        elif "body_b64" in r:
            body = base64.b64decode(r["body_b64"])
        elif "body" in r:
            body = r["body"].encode()
        elif "multipart" in r:
            m = r["multipart"]
            boundary = uuid.uuid4().hex
            data = base64.b64decode(m["b64"])
            body = (
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"{m['field']}\"; filename=\"{m['filename']}\"\r\n"
                f"Content-Type: {m.get('content_type', 'application/x-zip-compressed')}\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        if "content_type" in r:
            headers["Content-Type"] = r["content_type"]
        try:
            c = http.client.HTTPSConnection(host, port, context=ctx, timeout=20)
            c.request(r["method"], path, body=body, headers=headers)
            resp = c.getresponse()
            data = resp.read()
            out = {"status": resp.status, "length": len(data), "sha256": hashlib.sha256(data).hexdigest(), "content_type": resp.getheader("Content-Type"), "disposition": resp.getheader("Content-Disposition")}
            try:
                text = data.decode()
                if len(text) < 65536:
                    out["text"] = text
                out["json"] = json.loads(text)
            except (UnicodeDecodeError, ValueError):
                pass
            c.close()
        except (ssl.SSLError, OSError) as e:
            out = {"status": 0, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
        n += 1
    print(json.dumps({"done": n}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
