"""Servers the remote-source tests start on the loopback address: nginx serving a directory
over HTTP (Range, ETag, If-Match), moto's S3 server, and a small HTTP server of our own that
misbehaves on demand (throttles, ignores Range) where neither can be told to."""

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

NGINX = "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, secs: float = 20.0) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


LUA_MODULES = ["/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so"]


def have_lua() -> bool:
    """Whether nginx's Lua module (Debian's libnginx-mod-http-lua) is there, for `latency`."""
    return all(Path(m).exists() for m in LUA_MODULES)


class Nginx:
    """nginx on a free loopback port, serving `root` (or passing every request on to
    `upstream`, e.g. moto's S3 server); its access log counts the GETs.

    A link like an object store's, on the loopback address (`shaper.lua`, with nginx's Lua
    module): `latency` seconds before each response's first byte (a non-blocking sleep, so
    requests wait side by side, not in turn) and each response paced at `rate` per connection
    (nginx's size syntax: "50m" is 50 MiB a second). With `faults`, a share of requests for each
    of the ways a store fails: answered 503 with S3's SlowDown body, cut after their first
    64 KiB, or stalled `stall` seconds before their first byte (from a fixed seed). A shaped
    server's log gives each request's status, bytes sent, time taken and fault (`-`, `503`,
    `cut` or `stall`). With `tls`, a (certificate, key) pair of PEM files, it serves https."""

    def __init__(self, work: Path, latency: float = 0.0, rate: str = "", root: Path = None,
                 tls: tuple = None, faults: float = 0.0, stall: float = 2.0,
                 upstream: str = ""):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.root = root or work / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = work / "access.log"
        shaped = bool(latency or rate or faults)
        self.scheme = "https" if tls else "http"
        listen = f"127.0.0.1:{self.port}" + (" ssl" if tls else "")
        certs = f"ssl_certificate {tls[0]};\n    ssl_certificate_key {tls[1]};" if tls else ""
        origin = ""  # the server block that serves the files, behind the shaper
        if shaped:
            if upstream:
                host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
            else:
                host, port = "127.0.0.1", free_port()
                origin = f"server {{ listen {host}:{port}; root {self.root}; access_log off; }}"
            handling = f"""set $fault "-";
      set $shape_latency {latency};
      set $shape_rate {_bytes(rate) if rate else 0};
      set $shape_faults {faults};
      set $shape_stall {stall};
      set $shape_origin_host {host};
      set $shape_origin_port {port or 80};
      content_by_lua_file {SHAPER};"""
        elif upstream:
            handling = f"proxy_pass {upstream};\n      proxy_set_header Host $http_host;"
        else:
            handling = ""
        conf = work / "nginx.conf"
        conf.write_text(
            f"""{"".join(f"load_module {m};" for m in LUA_MODULES) if shaped else ""}
daemon off;
{"worker_processes 2;" if shaped else ""}
{"user root root;" if os.geteuid() == 0 else ""}
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{}}
http {{
  {SHAPED_LOG if shaped else ""}
  access_log {self.log} {"shaped" if shaped else "combined"};
  client_body_buffer_size 16m;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  {"init_worker_by_lua_block { math.randomseed(7) }" if faults else ""}
  {origin}
  server {{
    listen {listen};
    {certs}
    root {self.root};
    location / {{
      {handling}
    }}
  }}
}}
"""
        )
        self.conf = conf
        self.proc = None
        self.start()

    def start(self):
        # Its own process group: stop() kills the master and its workers together, as a crash
        # would (the workers of a killed master keep serving otherwise).
        self.proc = subprocess.Popen(
            [NGINX, "-c", str(self.conf), "-e", str(self.work / "error.log")],
            start_new_session=True,
        )
        assert wait_for_port(self.port), "nginx did not start"

    def stop(self):
        if self.proc:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
            self.proc = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and wait_for_port(self.port, 0.05):
                time.sleep(0.02)

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"

    def gets(self) -> int:
        """GET requests served so far."""
        try:
            return sum(1 for line in self.log.read_text().splitlines() if '"GET ' in line)
        except FileNotFoundError:
            return 0


SHAPED_LOG = """log_format shaped '"$request" $status $body_bytes_sent $request_time $fault';"""
SHAPER = Path(__file__).with_name("shaper.lua")


def _bytes(size: str) -> int:
    """nginx's size syntax: "50m" is 50 MiB, "64k" 64 KiB."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(size[-1].lower(), 1)
    return int(float(size.rstrip("kKmMgG")) * scale)


class Moto:
    """moto's S3 server on a free loopback port, and the environment that points npzfs (and
    boto3) at it."""

    def __init__(self):
        self.port = free_port()
        exe = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for_port(self.port), "moto_server did not start"
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Flaky(http.server.ThreadingHTTPServer):
    """Serves one file with Range, ETag and If-Match; `throttle` GETs are answered 503 first,
    `stalls` GETs wait `stall` seconds before answering, with `ignore_range` it sends the whole
    file to every GET, and every GET waits `delay` seconds before its answer."""

    def __init__(self, path: Path):
        self.path = path
        self.throttle = 0
        self.ignore_range = False
        self.delay = 0.0
        self.stalls = 0
        self.stall = 0.0
        self.gets = 0
        self.refused = 0
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{self.path.name}"

    def handle_error(self, request, client_address):
        # A client that hangs up on a refused answer (a whole file instead of a range) is
        # expected here, not a failure to print.
        pass


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _etag(self, data: bytes) -> str:
        return f'"{len(data):x}-{hash(data) & 0xFFFFFFFF:x}"'

    def do_HEAD(self):
        data = self.server.path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", self._etag(data))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        s = self.server
        s.gets += 1
        if s.delay:
            time.sleep(s.delay)  # a slow store, on purpose
        if s.stalls > 0:
            s.stalls -= 1
            time.sleep(s.stall)
        if s.throttle > 0:
            s.throttle -= 1
            s.refused += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        data = s.path.read_bytes()
        etag = self._etag(data)
        wanted = self.headers.get("If-Match")
        if wanted and wanted != etag:
            self.send_response(412)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        rng = self.headers.get("Range")
        if rng and not s.ignore_range:
            start, _, end = rng.removeprefix("bytes=").partition("-")
            start, end = int(start), min(int(end), len(data) - 1)
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)


def have_nginx() -> bool:
    return os.path.exists(NGINX)


def make_ca(work: Path) -> tuple:
    """A certificate authority of the test's own, and a certificate for 127.0.0.1 it signed:
    (the CA's certificate, the server's certificate, the server's key), PEM files in `work`."""
    work.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (work / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    run = lambda *a: subprocess.run(["openssl", *map(str, a)], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=npzfs test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = work / "srv.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    return ca, cert, key
