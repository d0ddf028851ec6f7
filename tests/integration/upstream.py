#!/usr/bin/env python3
"""A real HTTP/1.1 upstream for ztproxy's integration tests.

Raw sockets and one thread per connection, so the framing on the wire is
exactly what this file writes and every byte the proxy forwards is seen.
Keep-alive is honoured. Every request is recorded as JSON lines in the
--record file, twice:

  {"phase": "head", "id": N, "method", "target", "version", "headers": [[n, v]...]}
      as soon as the head has arrived (before the body is read), and
  {"phase": "end", "id": N, "method", "target", "complete": bool,
   "body_length": L, "body_sha256": "...", "trailers": ["raw trailer line"...]}
      once the body has been read (complete=false when the body was cut short
      or its chunked framing was broken).

Endpoints:
  GET  /echo                 200, JSON of what was received
  POST|PUT /upload           reads the body (Content-Length or chunked) while
                             hashing it, answers JSON {length, sha256}
  GET  /download?size=N[&chunked=1][&close=1]
                             N bytes of deterministic content (see
                             pattern_chunks()), Content-Length, chunked, or
                             delimited by closing the connection
  ANY  ...?pause=S            wait S seconds before reading the body
  GET  /slow?ms=N            answers after N milliseconds
  GET  /status?code=N        answers with that status and a small body
  GET  /bad?kind=K           a malformed response (cl_te, dup_cl, bad_chunk,
                             bare_lf, garbage), then closes
  GET  /ws                   WebSocket handshake (RFC 6455), then echoes frames
  GET  /hang                 never answers; the socket stays open until the
                             peer closes it or the server stops
  anything else              200 with a small text body

Prints "ready" on stdout once it listens. Python 3 standard library only.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import signal
import socket
import ssl
import threading
import time
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 1024 * 1024
BLOCK_SIZE = 64 * 1024
_BLOCK = random.Random(0x5A7E57).randbytes(BLOCK_SIZE)


def pattern_chunks(size, piece=BLOCK_SIZE):
    """Yield the deterministic download content of `size` bytes (a 64 KiB
    seeded-random block repeated) in pieces of at most `piece` bytes."""
    pos = 0
    while pos < size:
        off = pos % BLOCK_SIZE
        n = min(size - pos, piece, BLOCK_SIZE - off)
        yield _BLOCK[off:off + n]
        pos += n


def pattern_sha256(size):
    """sha256 hex digest of the `size`-byte download content."""
    h = hashlib.sha256()
    for part in pattern_chunks(size):
        h.update(part)
    return h.hexdigest()


class BadRequest(Exception):
    pass


class PeerClosed(Exception):
    pass


class Conn:
    """Buffered reader over a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        data = self.sock.recv(256 * 1024)
        if not data:
            raise PeerClosed()
        self.buf += data

    def read_head(self):
        """Return the head bytes (including CRLF CRLF), or None at a clean EOF
        between requests."""
        start = 0
        while True:
            idx = self.buf.find(b"\r\n\r\n", max(0, start - 3))
            if idx >= 0:
                head = bytes(self.buf[: idx + 4])
                del self.buf[: idx + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise BadRequest("head too large")
            start = len(self.buf)
            try:
                self.fill()
            except PeerClosed:
                if self.buf:
                    raise
                return None

    def read_exact_into(self, n, h):
        """Read n bytes, feeding them to hash h; returns count read."""
        got = 0
        while got < n:
            if not self.buf:
                self.fill()
            take = min(n - got, len(self.buf))
            h.update(self.buf[:take])
            del self.buf[:take]
            got += take
        return got

    def read_line(self, limit=64 * 1024):
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 2]
                return line
            if len(self.buf) > limit:
                raise BadRequest("line too long")
            self.fill()

    def read_some(self):
        if not self.buf:
            self.fill()
        data = bytes(self.buf)
        self.buf.clear()
        return data


def parse_head(head):
    lines = head[:-4].split(b"\r\n")
    try:
        reqline = lines[0].decode("latin-1")
        method, target, version = reqline.split(" ", 2)
    except ValueError:
        raise BadRequest("bad request line %r" % lines[0][:200])
    headers = []
    for raw in lines[1:]:
        if b":" not in raw:
            raise BadRequest("bad header line %r" % raw[:200])
        name, _, value = raw.partition(b":")
        headers.append([name.decode("latin-1"), value.strip(b" \t").decode("latin-1")])
    return method, target, version, headers


def hget(headers, name):
    name = name.lower()
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


class Server:
    def __init__(self, port, record, name, tls=None):
        self.name = name
        self.record_path = record
        self.record_lock = threading.Lock()
        self.counter = 0
        self.stop = threading.Event()
        self.tls_ctx = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self.tls_ctx = ctx
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]

    # -- recording -----------------------------------------------------
    def record(self, obj):
        if not self.record_path:
            return
        line = json.dumps(obj, sort_keys=True) + "\n"
        with self.record_lock:
            with open(self.record_path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()

    def next_id(self):
        with self.record_lock:
            self.counter += 1
            return self.counter

    # -- serving -------------------------------------------------------
    def serve_forever(self):
        while not self.stop.is_set():
            try:
                sock, addr = self.lsock.accept()
            except OSError:
                if self.stop.is_set():
                    return
                continue
            t = threading.Thread(target=self.handle_conn, args=(sock, addr), daemon=True)
            t.start()

    def handle_conn(self, sock, addr):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls_ctx is not None:
                sock = self.tls_ctx.wrap_socket(sock, server_side=True)
            conn = Conn(sock)
            while not self.stop.is_set():
                if not self.handle_request(conn, addr):
                    break
        except (PeerClosed, OSError, ssl.SSLError):
            pass
        except BadRequest as e:
            try:
                body = ("bad request: %s\n" % e).encode()
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def read_body(self, conn, headers, rid, method, target, h, trailers=None):
        """Read the request body into hash h; returns (length, complete).
        Chunked trailer lines are appended to trailers (a list)."""
        te = hget(headers, "transfer-encoding")
        cl = hget(headers, "content-length")
        length = 0
        if trailers is None:
            trailers = []
        try:
            if te is not None and te.strip().lower().endswith("chunked"):
                while True:
                    line = conn.read_line()
                    size_s = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_s, 16)
                    except ValueError:
                        raise BadRequest("bad chunk size %r" % line[:100])
                    if size == 0:
                        # trailers until an empty line (recorded in "trailers")
                        while True:
                            tl = conn.read_line()
                            if tl == b"":
                                break
                            trailers.append(tl.decode("latin-1"))
                        break
                    length += conn.read_exact_into(size, h)
                    if conn.read_line() != b"":
                        raise BadRequest("chunk not followed by CRLF")
            elif cl is not None:
                try:
                    n = int(cl)
                except ValueError:
                    raise BadRequest("bad content-length %r" % cl)
                length += conn.read_exact_into(n, h)
        except (PeerClosed, OSError, BadRequest):
            self.record({"phase": "end", "id": rid, "method": method, "target": target,
                         "complete": False, "body_length": length,
                         "body_sha256": h.hexdigest()})
            raise
        return length, True

    def handle_request(self, conn, addr):
        head = conn.read_head()
        if head is None:
            return False
        rid = self.next_id()
        try:
            method, target, version, headers = parse_head(head)
        except BadRequest:
            self.record({"phase": "head", "id": rid, "malformed": True,
                         "raw": head[:2000].decode("latin-1")})
            raise
        self.record({"phase": "head", "id": rid, "method": method, "target": target,
                     "version": version, "headers": headers})

        expect = hget(headers, "expect")
        if expect is not None and expect.lower() == "100-continue":
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

        h = hashlib.sha256()
        if target.startswith("/hang"):
            # Never answer. Keep the socket open until the peer gives up or
            # the server stops; swallow whatever arrives.
            conn.sock.settimeout(0.5)
            while not self.stop.is_set():
                try:
                    if not conn.sock.recv(65536):
                        break
                except socket.timeout:
                    continue
            raise PeerClosed()

        url = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(url.query)
        pause = float(query.get("pause", ["0"])[0])
        if pause > 0:
            # Do not read the body for a while: the proxy has to hold back
            # the client (backpressure), not buffer the whole upload.
            time.sleep(min(pause, 30))

        trailers = []
        length, _ = self.read_body(conn, headers, rid, method, target, h, trailers)
        digest = h.hexdigest()
        self.record({"phase": "end", "id": rid, "method": method, "target": target,
                     "complete": True, "body_length": length, "body_sha256": digest,
                     "trailers": trailers})

        conn_hdr = (hget(headers, "connection") or "").lower()
        if version == "HTTP/1.0":
            keep = "keep-alive" in conn_hdr
        else:
            keep = "close" not in conn_hdr

        path = url.path
        is_head = method == "HEAD"

        if path == "/ws" and (hget(headers, "upgrade") or "").lower() == "websocket":
            return self.websocket(conn, headers)

        if path == "/echo" or path.startswith("/echo/"):
            obj = {"upstream": self.name, "method": method, "target": target,
                   "path": path, "query": url.query, "version": version,
                   "headers": headers, "body_length": length, "body_sha256": digest,
                   "client": list(addr)}
            body = json.dumps(obj).encode()
            return self.send_simple(conn, 200, "OK", body, "application/json", keep, is_head)
        if path == "/upload":
            body = json.dumps({"upstream": self.name, "length": length,
                               "sha256": digest}).encode()
            return self.send_simple(conn, 200, "OK", body, "application/json", keep, is_head)
        if path == "/download":
            size = int(query.get("size", ["0"])[0])
            chunked = query.get("chunked", ["0"])[0] == "1"
            close = query.get("close", ["0"])[0] == "1"
            return self.send_download(conn, size, chunked, close, keep, is_head)
        if path == "/slow":
            time.sleep(min(int(query.get("ms", ["0"])[0]), 30000) / 1000.0)
            body = b"slow from %s\n" % self.name.encode()
            return self.send_simple(conn, 200, "OK", body, "text/plain", keep, is_head)
        if path == "/bad":
            return self.send_bad(conn, query.get("kind", [""])[0])
        if path == "/status":
            code = int(query.get("code", ["200"])[0])
            body = b"status %d from %s\n" % (code, self.name.encode())
            if code in (204, 304):
                body = b""
            return self.send_simple(conn, code, "Status", body, "text/plain", keep, is_head)
        body = b"hello from %s\n" % self.name.encode()
        return self.send_simple(conn, 200, "OK", body, "text/plain", keep, is_head)

    def send_bad(self, conn, kind):
        """Malformed responses, for the proxy's response parser."""
        bad = {
            "cl_te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nhello",
            "dup_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                      b"Content-Length: 7\r\n\r\nhello!!",
            "bad_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"zz\r\nhello\r\n0\r\n\r\n",
            "bare_lf": b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
            "garbage": b"this is not http\r\n\r\n",
        }.get(kind, b"HTTP/1.1 500 Unknown\r\nContent-Length: 0\r\n\r\n")
        conn.sock.sendall(bad)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return False

    def common_headers(self):
        return b"Server: zt-test-upstream\r\nX-Upstream: %s\r\n" % self.name.encode()

    def send_simple(self, conn, code, reason, body, ctype, keep, is_head):
        head = b"HTTP/1.1 %d %s\r\n" % (code, reason.encode())
        head += self.common_headers()
        head += b"Content-Type: %s\r\n" % ctype.encode()
        if code not in (204, 304):
            head += b"Content-Length: %d\r\n" % len(body)
        if not keep:
            head += b"Connection: close\r\n"
        head += b"\r\n"
        conn.sock.sendall(head + (b"" if is_head else body))
        return keep

    def send_download(self, conn, size, chunked, close, keep, is_head):
        head = b"HTTP/1.1 200 OK\r\n" + self.common_headers()
        head += b"Content-Type: application/octet-stream\r\n"
        if close:
            keep = False
            head += b"Connection: close\r\n"
        elif chunked:
            head += b"Transfer-Encoding: chunked\r\n"
        else:
            head += b"Content-Length: %d\r\n" % size
        if not keep and not close:
            head += b"Connection: close\r\n"
        head += b"\r\n"
        conn.sock.sendall(head)
        if is_head:
            return keep
        if chunked and not close:
            n = 0
            for part in pattern_chunks(size, 60000):
                # vary chunk sizes a little: split every other piece
                if n % 2 == 1 and len(part) > 1:
                    a, b = part[:1000], part[1000:]
                    conn.sock.sendall(b"%x\r\n%s\r\n%x\r\n%s\r\n" % (len(a), a, len(b), b))
                else:
                    conn.sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                n += 1
            conn.sock.sendall(b"0\r\n\r\n")
        else:
            for part in pattern_chunks(size):
                conn.sock.sendall(part)
        if close:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return False
        return keep

    # -- websocket -----------------------------------------------------
    def websocket(self, conn, headers):
        key = hget(headers, "sec-websocket-key")
        if not key:
            body = b"missing Sec-WebSocket-Key\n"
            self.send_simple(conn, 400, "Bad Request", body, "text/plain", False, False)
            return False
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
        conn.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n" + self.common_headers() +
                          b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            fin_op, payload = self.ws_read_frame(conn)
            opcode = fin_op & 0x0F
            if opcode == 0x8:  # close: echo it and close
                self.ws_send_frame(conn, fin_op, payload)
                return False
            if opcode == 0x9:  # ping -> pong
                self.ws_send_frame(conn, 0x80 | 0xA, payload)
                continue
            if opcode == 0xA:
                continue
            self.ws_send_frame(conn, fin_op, payload)

    def ws_need(self, conn, n):
        while len(conn.buf) < n:
            conn.fill()

    def ws_read_frame(self, conn):
        self.ws_need(conn, 2)
        b0, b1 = conn.buf[0], conn.buf[1]
        masked = b1 & 0x80
        ln = b1 & 0x7F
        off = 2
        if ln == 126:
            self.ws_need(conn, 4)
            ln = int.from_bytes(conn.buf[2:4], "big")
            off = 4
        elif ln == 127:
            self.ws_need(conn, 10)
            ln = int.from_bytes(conn.buf[2:10], "big")
            off = 10
        mask = b""
        if masked:
            self.ws_need(conn, off + 4)
            mask = bytes(conn.buf[off:off + 4])
            off += 4
        self.ws_need(conn, off + ln)
        payload = bytes(conn.buf[off:off + ln])
        del conn.buf[:off + ln]
        if masked:
            payload = ws_mask(payload, mask)
        return b0, payload

    def ws_send_frame(self, conn, fin_op, payload):
        n = len(payload)
        if n < 126:
            hdr = bytes([fin_op, n])
        elif n < 65536:
            hdr = bytes([fin_op, 126]) + n.to_bytes(2, "big")
        else:
            hdr = bytes([fin_op, 127]) + n.to_bytes(8, "big")
        conn.sock.sendall(hdr + payload)


def ws_mask(payload, mask):
    """XOR payload with the 4-byte mask (fast enough for a few MiB)."""
    if not payload:
        return payload
    n = len(payload)
    reps = (n + 3) // 4
    m = int.from_bytes((mask * reps)[:n], "big")
    return (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--record", default=None, help="JSON lines file of received requests")
    ap.add_argument("--name", default="upstream", help="reported in X-Upstream and /echo")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), default=None)
    args = ap.parse_args()

    srv = Server(args.port, args.record, args.name, args.tls)

    def on_term(signum, frame):
        srv.stop.set()
        try:
            srv.lsock.close()
        except OSError:
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready port=%d" % srv.port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
