"""gRPC over the mesh with the real grpcio stack, without generated stubs.

server PORT           serve bulwark.test.Echo (Unary, ServerStream, BidiStream) on PORT
client HOST:PORT      call every method and check responses, trailers and status codes
stream-fail HOST:PORT N
                      N server streams that send two messages, then fail UNAVAILABLE in
                      the trailers
denied HOST:PORT      one unary call that authorization must refuse with PERMISSION_DENIED
"""
import sys
import time
from concurrent import futures

import grpc

SERVICE = "bulwark.test.Echo"


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "kept"),))
    if request == b"fail":
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")
    return request[::-1]


def server_stream(request, context):
    if request.startswith(b"fail-after:"):
        for i in range(int(request.split(b":")[1])):
            yield str(i).encode()
        context.abort(grpc.StatusCode.UNAVAILABLE, "gone mid-stream")
    for i in range(int(request)):
        yield str(i).encode()


def bidi_stream(requests, context):
    for r in requests:
        yield b"echo:" + r


def serve(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "BidiStream": grpc.stream_stream_rpc_method_handler(bidi_stream),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    print("grpc server ready", flush=True)
    server.wait_for_termination(timeout=600)


def client(target):
    with grpc.insecure_channel(target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        call = ch.unary_unary(f"/{SERVICE}/Unary")
        for _ in range(20):
            resp, info = call.with_call(b"bulwark", timeout=5)
            assert resp == b"krawlub", resp
            trailers = dict(info.trailing_metadata())
            assert trailers.get("x-trailer") == "kept", trailers
        try:
            call(b"fail", timeout=5)
            raise AssertionError("expected FAILED_PRECONDITION")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.code()
            assert e.details() == "asked to fail", e.details()
        got = [m for m in ch.unary_stream(f"/{SERVICE}/ServerStream")(b"500", timeout=10)]
        assert got == [str(i).encode() for i in range(500)], len(got)
        sent = [f"m{i}".encode() for i in range(100)]
        got = list(ch.stream_stream(f"/{SERVICE}/BidiStream")(iter(sent), timeout=10))
        assert got == [b"echo:" + m for m in sent], len(got)
    print("grpc ok: 20 unary with trailers, 1 error status, 500-message server stream, 100-message bidi stream")


def stream_fail(target, n):
    with grpc.insecure_channel(target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        stream = ch.unary_stream(f"/{SERVICE}/ServerStream")
        for _ in range(n):
            got = []
            try:
                for m in stream(b"fail-after:2", timeout=5):
                    got.append(m)
                raise AssertionError("expected UNAVAILABLE")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e.code()
            assert got == [b"0", b"1"], got
    print(f"stream-fail ok: {n} streams failed after their messages")


def denied(target):
    with grpc.insecure_channel(target) as ch:
        try:
            ch.unary_unary(f"/{SERVICE}/Unary")(b"bulwark", timeout=10)
            raise AssertionError("expected PERMISSION_DENIED")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e.code()
    print("grpc denied ok: PERMISSION_DENIED")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "denied":
        denied(sys.argv[2])
    elif sys.argv[1] == "stream-fail":
        stream_fail(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2])
