"""An API server's TokenReview endpoint, for tests: answers
POST /apis/authentication.k8s.io/v1/tokenreviews the way kube-apiserver does.

token_review_api.py ADDR:PORT TOKENS_FILE

TOKENS_FILE has lines of `TOKEN NAMESPACE SERVICE_ACCOUNT AUDIENCE`: a token listed there
authenticates as system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT for AUDIENCE. As the real
server does, a review whose spec.audiences does not include the token's audience is
unauthenticated. Every review is printed, one JSON line each, for the test to read.
"""
import json
import sys
from http.server import ThreadingHTTPServer

from api_handler import JsonHandler

PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def load(path):
    tokens = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                tokens[parts[0]] = parts[1:]
    return tokens


class Handler(JsonHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path.split("?")[0] != PATH:
            return self.reply(404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Failure", "reason": "NotFound", "code": 404})
        review = json.loads(body)
        spec = review.get("spec", {})
        known = load(self.server.tokens_file).get(spec.get("token", ""))
        wanted = spec.get("audiences") or []
        if known and (not wanted or known[2] in wanted):
            ns, sa, audience = known
            status = {"authenticated": True, "audiences": [audience], "user": {
                "username": f"system:serviceaccount:{ns}:{sa}",
                "uid": "0b1d3c5e-2f4a-4c6e-8a0b-1c2d3e4f5a6b",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}",
                           "system:authenticated"]}}
        elif known:
            status = {"authenticated": False, "user": {},
                      "error": "[invalid bearer token, token audiences "
                               f"[\"{known[2]}\"] is invalid for the target audiences {json.dumps(wanted)}]"}
        else:
            status = {"authenticated": False, "user": {},
                      "error": "[invalid bearer token, token lookup failed]"}
        review["metadata"] = {"creationTimestamp": None}
        review["status"] = status
        print(json.dumps({"audiences": wanted, "status": status}), flush=True)
        self.reply(201, review)



def main(addr, tokens_file):
    host, port = addr.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.tokens_file = tokens_file
    print(f"token review api on {addr}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
