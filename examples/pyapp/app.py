#!/usr/bin/env python3
"""agentd's example Python app: the app contract with the standard library only.

- Sockets: every fd agentd passes (systemd socket activation: fds 3.. with
  LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), the private "probe" socket
  included. Started by hand (no LISTEN_FDS), it listens on :$PORT (8080).
- Readiness: READY=1 (and STATUS=) to $NOTIFY_SOCKET once serving.
- Stop: on SIGTERM, STOPPING=1 and the drain recipe: stop accepting, answer
  every request still arriving on open connections with "Connection: close"
  for a grace period (DRAIN_GRACE, default 1s; it ends early once no
  connection is left), close the idle ones, wait for the in-flight ones (up
  to DRAIN_TIMEOUT, default 25s, grace included), exit 0.

Endpoints: GET / (who answered), POST / (the body's length), GET /healthz,
GET /slow?ms=N (answers after N ms, at most a minute). BOOT_DELAY delays
serving and readiness. Durations are seconds, or a number with an ms/s suffix.

Python >= 3.8; tested with 3.11.
"""

import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlsplit

SD_LISTEN_FDS_START = 3
# How long open connections keep being served once draining (ends early
# when none is left), and the bound on the whole drain: under agentd's
# default 30 s drain timeout, so a stuck request is logged before SIGKILL.
GRACE = 1.0
SHUTDOWN_TIMEOUT = 25.0
MAX_SLOW = 60.0
MAX_BODY = 64 << 20


def log(*args):
    print("pyapp:", *args, file=sys.stderr, flush=True)


def parse_duration(s):
    """'1.5', '1.5s' or '200ms' -> seconds."""
    s = s.strip()
    if s.endswith("ms"):
        return float(s[:-2]) / 1000
    if s.endswith("s"):
        return float(s[:-1])
    return float(s)


# --- systemd protocols -----------------------------------------------------


def listen_fds():
    """Return [(name, socket)] for the fds passed by socket activation.

    Follows sd_listen_fds(3): the fds are meant for this process only if
    LISTEN_PID is our pid. A mismatch is an error here, not something to
    ignore: under agentd it means the Procfile command forked (a pipeline,
    '&', a wrapper without exec), and binding $PORT instead would only fail.
    The variables are unset so that children do not take the fds for theirs.
    """
    fds, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)
    if not fds:
        return []
    if pid != str(os.getpid()):
        sys.exit(f"pyapp: LISTEN_FDS={fds} but LISTEN_PID={pid} is not this process "
                 f"({os.getpid()}): start the app with exec")
    out = []
    for i in range(int(fds)):
        fd = SD_LISTEN_FDS_START + i
        # Activated fds come without close-on-exec: do not leak them.
        os.set_inheritable(fd, False)
        name = names[i] if i < len(names) and names[i] else f"LISTEN_FD_{fd}"
        sock = socket.socket(fileno=fd)  # family and type read from the fd
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            log(f"fd {fd} ({name}) is not a listening stream socket; skipped")
            sock.detach()
            continue
        out.append((name, sock))
    return out


def sd_notify(state):
    """Send state to $NOTIFY_SOCKET (a path, or abstract if it starts with @).

    Without NOTIFY_SOCKET (run by hand) it does nothing.
    """
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), addr)
    except OSError as e:
        log("sd_notify:", e)


# --- the drain -------------------------------------------------------------


class Drain:
    """Knows whether we are draining and which connections are open, busy or idle."""

    def __init__(self):
        self.draining = threading.Event()
        self.cond = threading.Condition()
        self.conns = {}  # accepted socket -> True while a request is in progress

    def add(self, conn):
        with self.cond:
            self.conns[conn] = False

    def remove(self, conn):
        with self.cond:
            self.conns.pop(conn, None)
            self.cond.notify_all()

    def busy(self, conn, busy):
        with self.cond:
            if conn in self.conns:
                self.conns[conn] = busy

    def wait_until_none(self, timeout):
        """Wait until no connection is open; False if timeout came first."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.conns, timeout)

    def close_idle(self):
        """Close the connections that are between requests.

        After the grace period these are the clients that sent nothing for
        the whole of it; shutting the socket down ends their handler's read.
        """
        with self.cond:
            for conn, busy in self.conns.items():
                if not busy:
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


DRAIN = Drain()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a length
    server_version = "pyapp"

    def parse_request(self):
        # Called once a request line has been read: from now until the
        # answer is sent, this connection must not be closed under it.
        DRAIN.busy(self.request, True)
        return super().parse_request()

    def handle_one_request(self):
        try:
            super().handle_one_request()
        finally:
            DRAIN.busy(self.request, False)

    status = 0
    sent_connection = False

    def send_response_only(self, code, message=None):
        # Also called by send_response, and alone for "100 Continue".
        self.status, self.sent_connection = code, False
        super().send_response_only(code, message)

    def send_header(self, keyword, value):
        if keyword.lower() == "connection":
            self.sent_connection = True
        super().send_header(keyword, value)

    def end_headers(self):
        # The recipe: once draining, every answer closes its connection, so
        # the client reconnects (to the new release, on the shared socket)
        # instead of sending into a connection about to be closed. Any
        # answer after which we close says so, for the same reason.
        final = self.status >= 200
        if final and (DRAIN.draining.is_set() or self.close_connection) and not self.sent_connection:
            self.send_header("Connection", "close")  # also sets close_connection
        super().end_headers()

    def log_message(self, fmt, *args):
        pass  # no access log: keep the example's output readable

    def reply(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        """Read the whole request body and return its length."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            n = 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline(8192).strip():  # trailers
                        pass
                    return n
                n += size
                if n > MAX_BODY:
                    raise ValueError("body too large")
                self.rfile.read(size)
                self.rfile.readline(8)  # CRLF after the chunk
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        left = n
        while left > 0:
            got = len(self.rfile.read(min(left, 1 << 16)))
            if got == 0:
                raise ValueError("body cut short")
            left -= got
        return n

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/":
            env = os.environ.get
            self.reply(200, f"hello from {env('AGENTD_APP', '')} {env('AGENTD_RELEASE', '')} "
                            f"{env('AGENTD_PROCESS', '')} pid {os.getpid()}\n")
        elif url.path == "/healthz":
            self.reply(200, "ok\n")
        elif url.path == "/slow":
            try:
                ms = int(parse_qs(url.query)["ms"][0])
                assert ms >= 0
            except (KeyError, ValueError, AssertionError):
                self.reply(400, "want ?ms=N\n")
                return
            d = min(ms / 1000, MAX_SLOW)
            time.sleep(d)
            self.reply(200, f"slept {d}s\n")
        else:
            self.reply(404, "not found\n")

    def do_POST(self):
        if urlsplit(self.path).path != "/":
            self.close_connection = True  # the body was not read
            self.reply(404, "not found\n")
            return
        try:
            n = self.read_body()
        except ValueError as e:
            self.close_connection = True
            self.reply(400, f"{e}\n")
            return
        self.reply(200, f"{n}\n")


class Server(ThreadingMixIn, HTTPServer):
    """An HTTPServer on a socket it was given rather than one it binds."""

    daemon_threads = True  # the drain decides when to stop, not interpreter exit
    block_on_close = False

    def __init__(self, sock):
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()  # the one TCPServer made; use the inherited one
        # Non-blocking: the socket is shared with other processes (the next
        # release), so one may win the connection select() announced; a
        # blocking accept() would then hang the accept loop, and the drain
        # waiting for it, until some later connection.
        sock.setblocking(False)
        self.socket = sock
        self.server_name, self.server_port = "localhost", 0

    def process_request(self, request, client_address):
        # Counted from accept, not from when its thread starts: the drain
        # must not see "no connection left" while one is about to be served.
        DRAIN.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        # Called when the connection's handler is done, whatever happened.
        try:
            super().shutdown_request(request)
        finally:
            DRAIN.remove(request)


# --- main ------------------------------------------------------------------


def main():
    grace = parse_duration(os.environ.get("DRAIN_GRACE", str(GRACE)))
    timeout = parse_duration(os.environ.get("DRAIN_TIMEOUT", str(SHUTDOWN_TIMEOUT)))
    # SIGTERM (and SIGINT, by hand) are blocked in every thread and taken
    # synchronously with sigwait below. A Python-level handler would run in
    # the main thread only, and only if the kernel happened to interrupt the
    # main thread and not a connection thread; setting an Event from it can
    # also deadlock on the Event's own lock. Blocked before any thread
    # starts, so that every thread inherits the mask. (Children inherit it
    # too: unblock it in any you start.)
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    socks = listen_fds()
    if not socks:
        port = int(os.environ.get("PORT", "8080"))
        s = socket.create_server(("", port), backlog=128)
        socks = [("port", s)]

    delay = parse_duration(os.environ.get("BOOT_DELAY", "0"))
    if delay > 0:
        log(f"booting slowly: {delay}s")
        if signal.sigtimedwait(stop_signals, delay):
            return 0

    servers = [Server(s) for _, s in socks]
    threads = [threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                daemon=True) for srv in servers]
    for t in threads:
        t.start()
    names = " ".join(f"{n}={s.getsockname()}" for n, s in socks)
    log("serving", names)
    sd_notify(f"READY=1\nSTATUS=serving {names}")

    sig = signal.sigwait(stop_signals)
    log(f"got {signal.Signals(sig).name}")

    # 1. Stop accepting. The flag goes first so that whatever is accepted
    # until the loops notice gets Connection: close too.
    DRAIN.draining.set()
    for srv in servers:
        srv.shutdown()  # returns once the accept loop has stopped
        srv.socket.close()  # under agentd the kernel socket lives on
    log("draining")
    sd_notify("STOPPING=1\nSTATUS=draining")
    start = time.monotonic()

    # 2. Grace: serve on open connections until none is left or time is up.
    DRAIN.wait_until_none(grace)

    # 3. Close the idle ones, wait for requests in flight.
    DRAIN.close_idle()
    left = max(0.0, timeout - (time.monotonic() - start))
    if not DRAIN.wait_until_none(left):
        log(f"{len(DRAIN.conns)} connections cut after {timeout}s")
        return 1
    log("drained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
