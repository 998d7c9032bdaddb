"""A Kubernetes API server's list and watch endpoints, for tests: serves the objects kept
as JSON files in a directory the way kube-apiserver serves them.

kube_api.py ADDR:PORT DIR

Each DIR/*.json file is one object (a Service, an EndpointSlice, a Pod or a bulwark.dev
policy kind). The directory is read every 50 ms: a new file is ADDED, a changed one
MODIFIED, a removed one DELETED, each with the next resourceVersion, as the API server's
watch cache would number them.

- `GET <collection>` lists (`metadata.resourceVersion` is the newest version);
- `GET <collection>?watch=true&resourceVersion=N` streams, one JSON event per line, every
  change after N, BOOKMARK events each second when `allowWatchBookmarks=true`, and ends
  after `timeoutSeconds`;
- `PATCH <collection>/namespaces/NS/NAME/status` (or `<collection>/NAME/status` for a
  cluster-scoped kind) merges the body's `status` into the object's file, which watches
  then see as MODIFIED, as a real status write is;
- `coordination.k8s.io/v1` Leases in memory: GET, POST (409 when it exists) and PUT
  (409 unless `metadata.resourceVersion` is the stored one);
- touching DIR/.expire compacts history: every open watch is sent the 410 Gone `ERROR` a
  real server sends for an expired resourceVersion and ends, and a watch from an older
  resourceVersion gets the same 410 at once, so the client must list again.

Every list and watch is printed, one JSON line each, for the test to read.
"""
import hashlib
import json
import os
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from api_handler import JsonHandler

COLLECTIONS = {
    ("v1", "Service"): "/api/v1/services",
    ("v1", "Pod"): "/api/v1/pods",
    ("discovery.k8s.io/v1", "EndpointSlice"): "/apis/discovery.k8s.io/v1/endpointslices",
    ("bulwark.dev/v1alpha1", "Backend"): "/apis/bulwark.dev/v1alpha1/backends",
    ("bulwark.dev/v1alpha1", "TrafficPolicy"): "/apis/bulwark.dev/v1alpha1/trafficpolicies",
    ("bulwark.dev/v1alpha1", "MeshConfig"): "/apis/bulwark.dev/v1alpha1/meshconfigs",
    ("bulwark.dev/v1alpha1", "AuthorizationPolicy"):
        "/apis/bulwark.dev/v1alpha1/authorizationpolicies",
}
KINDS = {path: key for key, path in COLLECTIONS.items()}


class Store:
    def __init__(self, directory):
        self.dir = directory
        self.cond = threading.Condition()
        self.version = 1
        self.compacted = 0
        self.expiries = 0
        self.objects = {}  # file -> (digest, object)
        self.events = []  # (version, collection, type, object)
        self.expire_mtime = self.mtime(".expire")
        self.leases = {}

    def mtime(self, name):
        try:
            return os.stat(os.path.join(self.dir, name)).st_mtime_ns
        except FileNotFoundError:
            return None

    def scan(self):
        seen = {}
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    data = f.read()
                seen[name] = (hashlib.sha256(data).hexdigest(), json.loads(data))
            except (OSError, ValueError):
                continue  # being written; read it next round
        with self.cond:
            changed = False
            for name, (digest, obj) in seen.items():
                old = self.objects.get(name)
                if old and old[0] == digest:
                    continue
                self.record("MODIFIED" if old else "ADDED", obj)
                self.objects[name] = (digest, self.stamped(obj))
                changed = True
            for name in list(self.objects):
                if name not in seen:
                    obj = self.objects.pop(name)[1]
                    self.record("DELETED", obj)
                    changed = True
            expire = self.mtime(".expire")
            if expire != self.expire_mtime:
                self.expire_mtime = expire
                self.compacted = self.version
                self.expiries += 1
                changed = True
            if changed:
                self.cond.notify_all()

    def stamped(self, obj):
        obj = json.loads(json.dumps(obj))
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.version)
        meta.setdefault("uid", hashlib.sha1(
            f"{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')}".encode()).hexdigest())
        return obj

    def record(self, kind, obj):
        self.version += 1
        path = COLLECTIONS.get((obj.get("apiVersion"), obj.get("kind")))
        if path:
            self.events.append((self.version, path, kind, self.stamped(obj)))

    def items(self, path):
        return [o for _, o in self.objects.values()
                if COLLECTIONS.get((o.get("apiVersion"), o.get("kind"))) == path]


def gone(since, compacted):
    return {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {since} ({compacted})",
        "reason": "Expired", "code": 410}}


LEASES = "/apis/coordination.k8s.io/v1/namespaces/"


def status_target(path):
    """(collection, namespace or None, name) of a `.../status` path."""
    parts = path.split("/")
    if len(parts) < 4 or parts[-1] != "status":
        return None
    name = parts[-2]
    for collection in KINDS:
        prefix = collection.rsplit("/", 1)
        if path.startswith(prefix[0] + "/namespaces/"):
            rest = path[len(prefix[0]) + len("/namespaces/"):].split("/")
            if len(rest) == 4 and rest[1] == prefix[1]:
                return collection, rest[0], name
        if path == f"{collection}/{name}/status":
            return collection, None, name
    return None


class Handler(JsonHandler):
    protocol_version = "HTTP/1.1"

    def body(self):
        return json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"null")

    def status(self, code, reason, message):
        self.reply(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": message, "reason": reason, "code": code})

    def lease(self, method, body=None):
        store = self.server.store
        with store.cond:
            cur = store.leases.get(self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1])
            if method == "GET":
                return self.reply(200, cur) if cur else self.status(404, "NotFound", "lease not found")
            name = body["metadata"]["name"]
            cur = store.leases.get(name)
            if method == "POST" and cur:
                return self.status(409, "AlreadyExists", f"leases \"{name}\" already exists")
            if method == "PUT" and (not cur or cur["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion")):
                return self.status(409, "Conflict", "the object has been modified")
            store.version += 1
            body["metadata"]["resourceVersion"] = str(store.version)
            store.leases[name] = body
        print(json.dumps({"lease": method, "holder": body["spec"].get("holderIdentity")}), flush=True)
        self.reply(201 if method == "POST" else 200, body)

    def do_POST(self):
        if self.path.startswith(LEASES):
            return self.lease("POST", self.body())
        self.status(405, "MethodNotAllowed", "not served here")

    def do_PUT(self):
        if self.path.startswith(LEASES):
            return self.lease("PUT", self.body())
        self.status(405, "MethodNotAllowed", "not served here")

    def do_PATCH(self):
        target = status_target(urlparse(self.path).path)
        patch = self.body()
        if target is None or self.headers.get("content-type") != "application/merge-patch+json":
            return self.status(415, "UnsupportedMediaType", "a merge patch of a status is served here")
        collection, ns, name = target
        store = self.server.store
        with store.cond:
            found = [(f, o) for f, (_, o) in store.objects.items()
                     if COLLECTIONS.get((o.get("apiVersion"), o.get("kind"))) == collection
                     and o["metadata"].get("namespace") == ns and o["metadata"]["name"] == name]
        if not found:
            return self.status(404, "NotFound", f"{name} not found")
        file, obj = found[0]
        with open(os.path.join(store.dir, file)) as f:
            kept = json.load(f)
        kept["status"] = patch.get("status")
        tmp = os.path.join(store.dir, "." + file + ".tmp")
        with open(tmp, "w") as f:
            json.dump(kept, f)
        os.rename(tmp, os.path.join(store.dir, file))
        print(json.dumps({"status": self.path, "conditions": (patch.get("status") or {}).get("conditions")}), flush=True)
        obj = dict(obj, status=patch.get("status"))
        self.reply(200, obj)

    def do_GET(self):
        if self.path.startswith(LEASES):
            return self.lease("GET")
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        key = KINDS.get(url.path)
        if key is None:
            return self.reply(404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Failure", "reason": "NotFound", "code": 404})
        store = self.server.store
        if query.get("watch") in ("true", "1"):
            return self.watch(store, url.path, key, query)
        with store.cond:
            items, version = store.items(url.path), store.version
        print(json.dumps({"list": url.path, "resourceVersion": version}), flush=True)
        self.reply(200, {"kind": key[1] + "List", "apiVersion": key[0],
                         "metadata": {"resourceVersion": str(version)}, "items": items})

    def watch(self, store, path, key, query):
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + min(int(query.get("timeoutSeconds", "290")), 290)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        print(json.dumps({"watch": path, "resourceVersion": since}), flush=True)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        next_bookmark = time.monotonic() + 1
        with store.cond:
            expiries = store.expiries
        try:
            while time.monotonic() < deadline:
                with store.cond:
                    if since < store.compacted or store.expiries != expiries:
                        self.chunk(gone(since, store.compacted))
                        break
                    pending = [e for e in store.events if e[0] > since and e[1] == path]
                    if not pending:
                        store.cond.wait(0.2)
                        if since < store.compacted or store.expiries != expiries:
                            continue  # expired while waiting: what came with it is not sent
                        pending = [e for e in store.events if e[0] > since and e[1] == path]
                    latest = store.version
                for version, _, kind, obj in pending:
                    self.chunk({"type": kind, "object": obj})
                    since = version
                if bookmarks and time.monotonic() >= next_bookmark:
                    since = max(since, latest)
                    self.chunk({"type": "BOOKMARK", "object": {
                        "kind": key[1], "apiVersion": key[0],
                        "metadata": {"resourceVersion": str(since)}}})
                    next_bookmark = time.monotonic() + 1
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def chunk(self, event):
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()



def main():
    host, port = sys.argv[1].rsplit(":", 1)
    store = Store(sys.argv[2])
    store.scan()

    def poll():
        while True:
            time.sleep(0.05)
            store.scan()

    threading.Thread(target=poll, daemon=True).start()
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.store = store
    print(json.dumps({"listening": sys.argv[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
