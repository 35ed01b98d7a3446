"""An independent TAK federation v2 client: Python grpcio with stubs generated at run time
from takgate's proto/fig.proto (grpcio-tools). It follows TAK Server's client sequence:
ServerFederateGroupsStream (expects SERVING first), ClientEventStream with a version,
HealthCheck, ServerEventStream carrying N position reports; it prints every event it
receives as a JSON line, then a {"done": ...} summary.

usage: fig_client.py --target HOST:PORT --ca CA --cert CERT --key KEY [--send N] [--seconds S]
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time

from grpc_tools import protoc
import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")


def stubs():
    out = tempfile.mkdtemp(prefix="figpy-")
    rc = protoc.main(["protoc", f"-I{PROTO}", f"--python_out={out}", f"--grpc_python_out={out}", os.path.join(PROTO, "fig.proto"), os.path.join(PROTO, "binarypayload.proto")])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import fig_pb2, fig_pb2_grpc  # noqa: E402

    return fig_pb2, fig_pb2_grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--send", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    a = ap.parse_args()
    pb, rpc = stubs()

    creds = grpc.ssl_channel_credentials(open(a.ca, "rb").read(), open(a.key, "rb").read(), open(a.cert, "rb").read())
    opts = [("grpc.ssl_target_name_override", "localhost"), ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
    ch = grpc.secure_channel(a.target, creds, options=opts)
    stub = rpc.FederatedChannelStub(ch)
    ident = pb.Identity(name="pyfed", uid="0123456789abcdef0123456789abcdef", serverId="pyfed-server", type=pb.Identity.FEDERATION_TAK_CLIENT)
    summary = {}

    groups = stub.ServerFederateGroupsStream(pb.Subscription(identity=ident))
    first = next(groups)
    summary["groups_first"] = pb.ServerHealth.ServingStatus.Name(first.streamUpdate.status)

    summary["health_before_subscribe"] = pb.ServerHealth.ServingStatus.Name(stub.HealthCheck(pb.ClientHealth(status=pb.ClientHealth.SERVING)).status)
    events = stub.ClientEventStream(pb.Subscription(identity=ident, version=pb.TakServerVersion(major=5, minor=5, patch=0, branch="py", variant="grpcio")))
    received = []

    def reader():
        try:
            for fe in events:
                rec = {}
                if fe.HasField("event"):
                    e = fe.event
                    rec = {"uid": e.uid, "type": e.type, "other": e.other, "lat": e.lat, "provenance": [p.federationServerId for p in fe.federateProvenance], "hops": fe.federateHops.currentHops}
                if fe.HasField("contact"):
                    rec["contact"] = {"op": pb.CRUD.Name(fe.contact.operation), "uid": fe.contact.uid, "callsign": fe.contact.callsign}
                received.append(rec)
                print(json.dumps(rec), flush=True)
        except grpc.RpcError as e:
            summary["events_end"] = e.code().name

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.3)
    summary["health"] = pb.ServerHealth.ServingStatus.Name(stub.HealthCheck(pb.ClientHealth(status=pb.ClientHealth.SERVING)).status)

    stop = threading.Event()

    def outgoing():
        now = int(time.time() * 1000)
        yield pb.FederatedEvent(contact=pb.ContactListEntry(operation=pb.CREATE, uid="PY-FED-1", callsign="PYFED"))
        for k in range(1, a.send + 1):
            g = pb.GeoEvent(sendTime=now + k, startTime=now + k, staleTime=now + 60000, lat=48.1, lon=11.5, hae=500.0, ce=10.0, le=10.0, uid="PY-FED-1", type="a-f-G-U-C", coordSource="m-g", other=f'<detail><contact callsign="PYFED"/><remarks>seq={k}</remarks></detail>')
            yield pb.FederatedEvent(event=g)
        stop.wait()

    sent = stub.ServerEventStream.future(outgoing())
    deadline = time.time() + a.seconds
    while time.time() < deadline:
        time.sleep(0.5)
        stub.HealthCheck(pb.ClientHealth(status=pb.ClientHealth.SERVING))
    stop.set()
    summary["received"] = len(received)
    summary["server_event_stream_pending"] = not sent.done()
    sent.cancel()
    events.cancel()
    groups.cancel()
    print(json.dumps({"done": summary}), flush=True)
    ch.close()


if __name__ == "__main__":
    main()
