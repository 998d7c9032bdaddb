"""Raw TCP probes.

banner HOST PORT N     connect N times to a server-speaks-first service; print the seconds
                       each connection waited for the banner, as a JSON list
names HOST PORT N      connect N times to a banner service; print each banner's server name
                       (the second word of `220 NAME ready`) as a JSON list
slowloris HOST PORT    send half a request head and print the seconds until the peer closes
"""
import json
import socket
import sys
import time


def banner(host, port, n):
    waits = []
    for _ in range(n):
        start = time.monotonic()
        with socket.create_connection((host, port), timeout=15) as s:
            data = s.recv(100)
            waits.append(round(time.monotonic() - start, 4))
            assert data.startswith(b"220 "), data
            s.sendall(b"HELO mesh\r\n")
            assert s.recv(100).startswith(b"250 HELO mesh"), "echo after banner"
    print(json.dumps(waits))


def names(host, port, n):
    seen = []
    for _ in range(n):
        with socket.create_connection((host, port), timeout=15) as s:
            seen.append(s.recv(100).decode().split()[1])
    print(json.dumps(seen))


def slowloris(host, port):
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        try:
            while s.recv(1024):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    print(round(time.monotonic() - start, 3))


if __name__ == "__main__":
    if sys.argv[1] == "banner":
        banner(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "names":
        names(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        slowloris(sys.argv[2], int(sys.argv[3]))
