"""Raw TCP probes.

banner HOST PORT N     connect N times to a server-speaks-first service; print the seconds
                       each connection waited for the banner, as a JSON list
names HOST PORT N      connect N times to a banner service; print each banner's server name
                       (the second word of `220 NAME ready`) as a JSON list
slowloris HOST PORT    send half a request head and print the seconds until the peer closes
raw HOST PORT HEX      send the bytes HEX, then print the first line of what comes back
                       (empty when the peer closed without a word), within 10 s
trickle HOST PORT S    send a request head one byte every S seconds; print the seconds
                       until the peer closes, or "open" after 20 s
silent HOST PORT N S   open N connections one after another, each silent for S seconds
body HOST PORT N S     POST N body bytes, one every S seconds; print JSON: the seconds taken
                       and the first line of the answer (empty when the peer closed first)
record PORT FILE       accept connections on PORT for 120 s at most and append every byte
                       they carry to FILE, answering nothing
"""
import threading
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


def raw(host, port, data):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        got = b""
        try:
            while b"\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    print(got.split(b"\r\n")[0].decode(errors="replace"))


def trickle(host, port, every):
    head = b"GET / HTTP/1.1\r\nHost: trickle\r\nX-Pad: " + b"a" * 64 + b"\r\n\r\n"
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=30) as s:
        s.settimeout(every)
        for b in head:
            if time.monotonic() - start > 20:
                print("open")
                return
            try:
                s.sendall(bytes([b]))
                if s.recv(1024) == b"":
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    print(round(time.monotonic() - start, 3))


def body(host, port, n, every):
    head = f"POST /upload HTTP/1.1\r\nHost: body\r\nContent-Length: {n}\r\n\r\n"
    start = time.monotonic()
    answer = b""
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head.encode())
        s.settimeout(every)
        try:
            for _ in range(n):
                if time.monotonic() - start > 20:
                    break
                s.sendall(b"x")
                try:
                    answer = s.recv(1024)
                    break  # an answer, or the close (b""), before the body was whole
                except socket.timeout:
                    continue
            else:
                s.settimeout(10)
                answer = s.recv(1024)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
    line = answer.split(b"\r\n")[0].decode(errors="replace")
    print(json.dumps({"seconds": round(time.monotonic() - start, 3), "answer": line}))


def silent(host, port, n, secs):
    for _ in range(n):
        with socket.create_connection((host, port), timeout=10):
            time.sleep(secs)


def record(port, path):
    srv = socket.create_server(("0.0.0.0", port))
    srv.settimeout(1)
    end = time.monotonic() + 120
    lock = threading.Lock()

    def drain(conn):
        conn.settimeout(5)
        with conn:
            try:
                while True:
                    data = conn.recv(4096)
                    if not data:
                        return
                    with lock, open(path, "ab") as f:
                        f.write(data)
            except (socket.timeout, ConnectionResetError):
                return

    open(path, "ab").close()
    while time.monotonic() < end:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    if sys.argv[1] == "banner":
        banner(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "names":
        names(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "raw":
        raw(sys.argv[2], int(sys.argv[3]), bytes.fromhex(sys.argv[4]))
    elif sys.argv[1] == "trickle":
        trickle(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1] == "silent":
        silent(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    elif sys.argv[1] == "body":
        body(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    elif sys.argv[1] == "record":
        record(int(sys.argv[2]), sys.argv[3])
    else:
        slowloris(sys.argv[2], int(sys.argv[3]))
