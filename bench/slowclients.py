"""Slow clients against a real ``stemedb serve`` (docs/http.md, "Slow clients").

    python -m bench.slowclients                         # the worker: six cases and the floor (~2 min)
    python -m bench.slowclients --quick                 # four short cases (< 1 min)
    python -m bench.slowclients --via nginx             # through the shipped nginx (~1.5 min)
    python -m bench.slowclients --worker stock          # gunicorn's stock gthread worker
    python -m bench.slowclients --via direct,nginx --worker stemedb,stock --out FILE
    python -m bench.slowclients --via nginx --cases cl-body:10 --seconds 80   # one long case

A case opens N slow clients, all of one kind, and holds N open for the whole
case: a client the server (or nginx) closes is replaced by a new one, so the
load does not fade when a timeout fires.  Each client sends one byte every
``--byte-interval`` seconds (1 s), from the first byte of its request:

* ``headers``: a request head that never ends (``GET /v1/health ...``);
* ``cl-body``: a whole head announcing ``Content-Length: 200000``
  (``POST /v1/assert/batch``), then the body one byte at a time;
* ``chunked``: a whole head with ``Transfer-Encoding: chunked``, then chunks
  of one byte (``1\\r\\nx\\r\\n``) one byte at a time, never the last chunk;
* ``none``: no slow client, the probe's floor (every setting starts with it).

Meanwhile a probe asks ``GET /v1/health`` on a new connection every 0.5 s
(the next starts when the previous ends if that is later), with a 5 s
timeout, for ``--seconds`` (15 s; 6 with ``--quick``).  Per case: probes
answered (200) / timed out / failed otherwise, their median and worst
latency, how many slow clients were closed by the other end (and after how
long, and whether with an answer: its status line, or none), and the age of
the oldest client still open at the end.

Servers: ``stemedb serve`` on 127.0.0.1 (its own worker, 16 threads), or,
with ``--worker stock``, ``gunicorn -c ops/gunicorn.conf.py -k gthread``:
the shipped configuration with gunicorn's stock gthread worker (the ``-k``
of gunicorn's command line overrides the file's ``worker_class``; nothing
of StemeDB changes).  ``--via nginx`` puts nginx in front with the shipped
``ops/nginx/stemedb.conf`` adapted to loopback ports and a throw-away
certificate as tests/ops/test_deploy_files.py does; its wrapping
``nginx.conf`` has one worker process and ``worker_connections 4096`` (the
test's ``events {}`` leaves nginx's default 512, too few for 500 clients);
clients and probes then speak TLS to nginx.  Rate limits are off in
StemeDB (``STEMEDB_RATE_LIMITS``); nginx keeps its own.

Every loop is bounded by count and time; every socket is closed at the end
of its case; the servers started here are stopped (SIGTERM, then SIGKILL
after 30 s).  The load generator shares the machine with the servers: the
figures are latencies on that machine under that load, not a capacity.
"""
from __future__ import annotations

import argparse
import http.client
import os
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from bench.bench_http import NO_LIMITS, ROOT, free_port

PROBE_EVERY = 0.5
PROBE_TIMEOUT = 5.0
BODY_BYTES = 200_000
MAX_REOPEN_PER_TICK = 200   # replacements per loop turn, so the trickle goes on meanwhile
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

# (kind, clients) per setting; the docs quote these
CASES = {
    ("direct", "stemedb"): [("headers", 16), ("headers", 100), ("headers", 500),
                            ("cl-body", 100), ("chunked", 100), ("headers", 1000)],
    ("direct", "stock"): [("headers", 16), ("headers", 100)],
    ("nginx", "stemedb"): [("headers", 100), ("cl-body", 100), ("chunked", 100),
                           ("headers", 500)],
    ("nginx", "stock"): [("headers", 100), ("cl-body", 100), ("chunked", 100),
                         ("headers", 500)],
}
QUICK_CASES = {
    ("direct", "stemedb"): [("headers", 16), ("headers", 100), ("cl-body", 50), ("chunked", 50)],
    ("direct", "stock"): [("headers", 16)],
    ("nginx", "stemedb"): [("headers", 100), ("cl-body", 50), ("chunked", 50)],
    ("nginx", "stock"): [("headers", 100), ("cl-body", 50)],
}


# ------------------------------------------------------------------ servers

class Server:
    """A process started here (its own session), healthy at ``url`` or killed."""

    def __init__(self, argv: list[str], env: dict, url: str, log: str, ctx=None):
        self.log = open(log, "ab")
        self.logpath = log
        self.p = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=ROOT)
        deadline = time.monotonic() + 120
        try:
            while True:
                if self.p.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited {self.p.returncode}; see {log}")
                try:
                    with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} not healthy in 120 s; see {log}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)   # its own session: only what we started
                self.p.wait(10)
        self.log.close()


def start_stemedb(tmp: str, worker: str) -> tuple[Server, int]:
    port, dport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
    env.update(STEMEDB_DATA_DIR=os.path.join(tmp, "data"), STEMEDB_BIND=f"127.0.0.1:{port}",
               STEMEDB_DASHBOARD_BIND=f"127.0.0.1:{dport}", STEMEDB_RATE_LIMITS=NO_LIMITS,
               STEMEDB_LOG_LEVEL="warning", STEMEDB_AUDIT="off")
    if os.environ.get("STEMEDB_PURE_PYTHON"):
        env["STEMEDB_PURE_PYTHON"] = os.environ["STEMEDB_PURE_PYTHON"]
    if worker == "stock":
        argv = [sys.executable, "-m", "gunicorn", "-c", os.path.join(ROOT, "ops", "gunicorn.conf.py"),
                "-k", "gthread"]
    else:
        argv = [sys.executable, "-m", "stemedb.cli", "serve"]
    server = Server(argv, env, f"http://127.0.0.1:{port}/v1/health",
                    os.path.join(tmp, f"stemedb-{worker}.log"))
    return server, port


def nginx_conf(tmp: str, upstream_port: int, https_port: int, http_port: int) -> str:
    """ops/nginx/stemedb.conf on loopback ports, as tests/ops/test_deploy_files.py does."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    os.path.join(tmp, "key.pem"), "-out", os.path.join(tmp, "cert.pem"),
                    "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    conf = open(os.path.join(ROOT, "ops", "nginx", "stemedb.conf")).read()
    conf = (conf.replace("/etc/stemedb/tls/fullchain.pem", os.path.join(tmp, "cert.pem"))
                .replace("/etc/stemedb/tls/privkey.pem", os.path.join(tmp, "key.pem"))
                .replace("127.0.0.1:18180", f"127.0.0.1:{upstream_port}")
                .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
                .replace("listen [::]:443 ssl http2;", "")
                .replace("listen 80;", f"listen 127.0.0.1:{http_port};")
                .replace("listen [::]:80;", ""))
    with open(os.path.join(tmp, "stemedb.conf"), "w") as f:
        f.write(conf)
    user = "user root;\n" if os.getuid() == 0 else ""
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(f"{user}worker_processes 1;\ndaemon off;\nerror_log {tmp}/error.log;\n"
                f"pid {tmp}/nginx.pid;\nevents {{ worker_connections 4096; }}\n"
                f"http {{ access_log {tmp}/access.log; client_body_temp_path {tmp}/body; "
                f"proxy_temp_path {tmp}/proxy; include {tmp}/stemedb.conf; }}\n")
    return path


def start_nginx(tmp: str, upstream_port: int) -> tuple[Server, int]:
    if not NGINX or not shutil.which("openssl"):
        raise SystemExit("--via nginx needs nginx and openssl")
    https_port, http_port = free_port(), free_port()
    conf = nginx_conf(tmp, upstream_port, https_port, http_port)
    server = Server([NGINX, "-c", conf, "-p", tmp], dict(os.environ),
                    f"https://127.0.0.1:{https_port}/v1/health",
                    os.path.join(tmp, "nginx.out"), ctx=_tls())
    return server, https_port


_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """One client context for every connection (building one loads the system's
    CA certificates: ~30 ms that would count in each probe); the throw-away
    certificate is not verified."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _TLS.check_hostname = False
        _TLS.verify_mode = ssl.CERT_NONE
    return _TLS


# ------------------------------------------------------------ slow clients

def request_bytes(kind: str) -> tuple[bytes, bytes]:
    """(sent at once, then trickled): the trickled part is longer than any case."""
    if kind == "none":
        return b"", b""
    if kind == "headers":
        return b"", (b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n"
                     b"X-Slow: " + b"a" * 4000)
    if kind == "cl-body":
        return (b"POST /v1/assert/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % BODY_BYTES), b" " * BODY_BYTES
    if kind == "chunked":
        return (b"POST /v1/assert/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"), \
            b"1\r\n \r\n" * 4000
    raise ValueError(kind)


class Slow:
    __slots__ = ("sock", "opened", "sent", "next_at")

    def __init__(self, sock, opened: float, next_at: float):
        self.sock, self.opened, self.sent, self.next_at = sock, opened, 0, next_at


class Tricklers:
    """``n`` slow clients of one kind, kept at ``n`` by a thread until ``stop``."""

    def __init__(self, port: int, kind: str, n: int, interval: float, tls: bool):
        self.port, self.kind, self.n, self.interval = port, kind, n, interval
        self.ctx = _tls() if tls else None
        self.first, self.rest = request_bytes(kind)
        self.sel = selectors.DefaultSelector()
        self.live: dict[int, Slow] = {}
        self.closed: list[tuple[float, bytes]] = []   # (lifetime s, first bytes of the answer)
        self.open_failures = 0
        self.stop_at = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, now: float) -> bool:
        s = None
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if self.ctx is not None:
                s = self.ctx.wrap_socket(s)          # handshake within the 5 s timeout
            s.settimeout(2)
            if self.first:
                s.sendall(self.first)
        except OSError:
            self.open_failures += 1
            if s is not None:
                s.close()
            return False
        c = Slow(s, time.monotonic(), now + self.interval * (len(self.live) % 10) / 10)
        self.live[s.fileno()] = c
        self.sel.register(s, selectors.EVENT_READ, c)
        return True

    def _close(self, c: Slow, answer: bytes | None) -> None:
        self.sel.unregister(c.sock)
        del self.live[c.sock.fileno()]
        if answer is not None:
            self.closed.append((time.monotonic() - c.opened, answer))
        c.sock.close()

    def open_all(self, budget: float) -> float:
        """Open the ``n`` clients (within ``budget`` s); the seconds it took."""
        t = time.monotonic()
        while len(self.live) < self.n and time.monotonic() - t < budget:
            self._open(time.monotonic())
        return time.monotonic() - t

    def start(self, until: float) -> None:
        self.stop_at = until
        self.thread.start()

    def _run(self) -> None:
        while time.monotonic() < self.stop_at:
            # the other end answered or closed: note it, replace the client
            for key, _ in self.sel.select(timeout=0.05):
                c = key.data
                c.sock.setblocking(False)
                try:
                    got = c.sock.recv(4096)
                except ssl.SSLWantReadError:
                    continue    # TLS bytes that are no data (a session ticket)
                except BlockingIOError:
                    continue
                except (OSError, ssl.SSLError):
                    got = b""
                finally:
                    if c.sock.fileno() >= 0:
                        c.sock.settimeout(2)
                self._close(c, got.split(b"\r\n", 1)[0] if got else b"")
            now = time.monotonic()
            for c in list(self.live.values()):
                if c.next_at <= now:
                    try:
                        c.sock.send(self.rest[c.sent:c.sent + 1])
                        c.sent += 1
                        c.next_at = now + self.interval
                    except (OSError, ssl.SSLError):
                        self._close(c, b"(send failed)")
            reopened = 0
            while (len(self.live) < self.n and reopened < MAX_REOPEN_PER_TICK
                   and time.monotonic() < self.stop_at):
                self._open(time.monotonic())
                reopened += 1

    def close_all(self) -> float:
        """Close every client; the age of the oldest one still open."""
        self.thread.join(10)
        now = time.monotonic()
        oldest = max((now - c.opened for c in self.live.values()), default=0.0)
        for c in list(self.live.values()):
            self._close(c, None)
        self.sel.close()
        return oldest


# ------------------------------------------------------------------ probes

def probe_once(port: int, tls: bool) -> tuple[str, float]:
    t = time.monotonic()
    if tls:
        c: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=PROBE_TIMEOUT, context=_tls())
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        c.request("GET", "/v1/health")
        r = c.getresponse()
        r.read()
        return ("ok" if r.status == 200 else f"status {r.status}"), time.monotonic() - t
    except (socket.timeout, TimeoutError):
        return "timeout", time.monotonic() - t
    except (OSError, http.client.HTTPException) as e:
        return f"error {type(e).__name__}", time.monotonic() - t
    finally:
        c.close()


def probe(port: int, tls: bool, seconds: float) -> list[tuple[str, float]]:
    out = []
    t0 = time.monotonic()
    for i in range(int(seconds / PROBE_EVERY)):
        wait = t0 + i * PROBE_EVERY - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if time.monotonic() - t0 >= seconds:
            break
        out.append(probe_once(port, tls))
    return out


def wait_healthy(port: int, tls: bool, seconds: float = 60) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if probe_once(port, tls)[0] == "ok":
            return True
        time.sleep(0.5)
    return False


# ------------------------------------------------------------------ cases

def run_case(port: int, tls: bool, kind: str, n: int, args) -> dict:
    t = Tricklers(port, kind, n, args.byte_interval, tls)
    try:
        open_s = t.open_all(budget=30)
        opened = len(t.live)
        t.start(time.monotonic() + args.seconds + 1)
        time.sleep(0.5)
        probes = probe(port, tls, args.seconds)
    finally:
        oldest = t.close_all()
    ok = [s for r, s in probes if r == "ok"]
    lat = [s for _, s in probes]
    answers: dict[str, int] = {}
    for _, a in t.closed:
        key = a.decode("latin-1")[:40] or "(closed, no answer)"
        answers[key] = answers.get(key, 0) + 1
    lifetimes = [x for x, _ in t.closed]
    return {
        "kind": kind, "clients": n, "opened": opened, "open_s": open_s,
        "open_failures": t.open_failures,
        "probes": len(probes), "answered": len(ok),
        "timed_out": sum(1 for r, _ in probes if r == "timeout"),
        "other": sorted({r for r, _ in probes if r not in ("ok", "timeout")}),
        "median_ms": 1000 * statistics.median(lat) if lat else None,
        "worst_ms": 1000 * max(lat) if lat else None,
        "ok_median_ms": 1000 * statistics.median(ok) if ok else None,
        "closed_by_server": len(t.closed), "answers": answers,
        "lifetime_median_s": statistics.median(lifetimes) if lifetimes else None,
        "lifetime_min_s": min(lifetimes) if lifetimes else None,
        "oldest_open_s": oldest,
    }


def run_setting(via: str, worker: str, args) -> list[dict]:
    cases = [("none", 0)] + (args.cases or (QUICK_CASES if args.quick else CASES)[(via, worker)])
    tmp = tempfile.mkdtemp(prefix="stemedb-slow-")
    servers: list[Server] = []
    rows = []
    try:
        s, port = start_stemedb(tmp, worker)
        servers.append(s)
        tls = via == "nginx"
        if tls:
            ng, port = start_nginx(tmp, port)
            servers.append(ng)
        for kind, n in cases:
            if not wait_healthy(port, tls):
                raise RuntimeError(f"not healthy before {kind} x{n}; see {tmp}")
            row = run_case(port, tls, kind, n, args)
            row.update(via=via, worker=worker)
            rows.append(row)
            print(line(row), flush=True)
        # the logs show what the servers said; keep none of it past the run
        return rows
    finally:
        for s in reversed(servers):
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _ms(x) -> str:
    return "-" if x is None else (f"{x:,.1f}" if x < 100 else f"{x:,.0f}")


def _s(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def line(r: dict) -> str:
    ans = "; ".join(f"{k} x{v}" for k, v in r["answers"].items()) or "-"
    return (f"| {r['via']} | {r['worker']} | {r['kind']} | {r['clients']:,} | "
            f"{r['answered']}/{r['probes']} | {r['timed_out']} | "
            f"{', '.join(r['other']) or '-'} | {_ms(r['median_ms'])} | {_ms(r['worst_ms'])} | "
            f"{r['closed_by_server']:,} | {_life(r)} | {ans} | {_s(r['oldest_open_s'])} |")


def _life(r: dict) -> str:
    if r["lifetime_min_s"] is None:
        return "-"
    return f"{r['lifetime_min_s']:.1f}-{r['lifetime_median_s']:.1f}"


HEAD = ("| via | worker | slow clients | N | probes answered | timed out | other | "
        "median ms | worst ms | clients closed by the server | closed after s (min-median) | "
        "their answer | oldest open at end, s |\n|---|---|---|---:|---:|---:|---|---:|---:|---:|"
        "---|---|---:|")


def _commit() -> str:
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10, cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "stemedb", "ops"],
                               capture_output=True, text=True, timeout=10,
                               cwd=ROOT).stdout.strip()
        return c + (" (stemedb/ or ops/ has uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def _load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter cases (< 1 min)")
    ap.add_argument("--via", default="direct",
                    help="direct, nginx, or both: direct,nginx (default direct)")
    ap.add_argument("--worker", default="stemedb",
                    help="stemedb (stemedb serve), stock (gunicorn -c ops/gunicorn.conf.py "
                         "-k gthread), or both: stemedb,stock")
    ap.add_argument("--seconds", type=float, default=None,
                    help="probing per case (default 15; 6 with --quick)")
    ap.add_argument("--byte-interval", type=float, default=1.0,
                    help="seconds between two bytes of one slow client (default 1)")
    ap.add_argument("--cases", help="instead of the default cases: KIND:N,... with KIND "
                                    "headers, cl-body or chunked (e.g. cl-body:10)")
    ap.add_argument("--out", help="write the markdown report here too")
    ap.add_argument("--append", action="store_true",
                    help="add the report to the end of --out instead of replacing it")
    args = ap.parse_args(argv)
    if args.cases:
        try:
            args.cases = [(k, int(n)) for k, n in (c.split(":") for c in args.cases.split(","))]
        except ValueError:
            ap.error("--cases: KIND:N,...")
        for k, n in args.cases:
            if k not in ("headers", "cl-body", "chunked") or not 0 < n <= 5000:
                ap.error(f"--cases: unknown kind {k!r} or N {n} not in 1-5000")
    if args.seconds is None:
        args.seconds = 6.0 if args.quick else 15.0
    settings = [(v, w) for v in args.via.split(",") for w in args.worker.split(",")]
    for v, w in settings:
        if (v, w) not in CASES:
            ap.error(f"unknown --via {v!r} or --worker {w!r}")
    cmd = "python -m bench.slowclients " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.monotonic()
    load0 = _load()
    print(HEAD, flush=True)
    rows = []
    for v, w in settings:
        rows += run_setting(v, w, args)
    text = "\n".join([
        "# Slow clients", "",
        f"- command: `{cmd.strip()}`",
        f"- date: {start}; commit {_commit()}; Python {sys.version.split()[0]}; "
        f"{os.cpu_count()} cores; load average {load0} at the start, {_load()} at the end",
        f"- each slow client sends one byte every {args.byte_interval:g} s; N are held open "
        f"for the whole case (one closed is replaced); a probe `GET /v1/health` on a new "
        f"connection every {PROBE_EVERY} s with a {PROBE_TIMEOUT:g} s timeout, for "
        f"{args.seconds:g} s per case (latency of every probe, timed-out ones at their timeout)",
        "- the load generator (clients and probes, one Python process) shares the machine "
        "with the servers and with other work: these are latencies on that machine under "
        "that load",
        "- worker `stemedb`: `stemedb serve` (stemedb.http.worker, 16 threads); `stock`: "
        "`gunicorn -c ops/gunicorn.conf.py -k gthread` (the shipped settings, gunicorn's "
        "own gthread worker); via `nginx`: ops/nginx/stemedb.conf on loopback ports, "
        "clients and probes over TLS, so each probe includes a TLS handshake (the `none` "
        "row is the floor)",
        f"- the run took {(time.monotonic() - t0) / 60:.1f} min",
        "", HEAD] + [line(r) for r in rows] + [""])
    print()
    print(text)
    if args.out:
        with open(args.out, "a" if args.append else "w") as f:
            f.write(("\n" if args.append and f.tell() else "") + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
