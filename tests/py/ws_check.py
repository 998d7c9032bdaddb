"""WebSocket (HTTP/1.1 Upgrade) through the mesh with the websockets library.

server PORT      echo server
client URL N     send N messages of growing size, expect each echoed
"""
import sys

from websockets.sync.client import connect
from websockets.sync.server import serve


def echo(ws):
    for message in ws:
        ws.send(message)


def server(port):
    with serve(echo, "0.0.0.0", port) as s:
        print("ws server ready", flush=True)
        s.serve_forever()


def client(url, n):
    with connect(url, open_timeout=10, close_timeout=5) as ws:
        for i in range(n):
            msg = f"{i}:" + "x" * (i * 997 % 65536)
            ws.send(msg)
            got = ws.recv(timeout=10)
            assert got == msg, (i, len(got), len(msg))
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"
    print(f"ws ok: {n} text messages and 1 binary message echoed")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
