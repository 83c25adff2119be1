"""A webhook receiver for the notification tests (Python standard library
only), verifying every delivery's signature itself, written from the
Standard Webhooks specification rather than from tenantplane's code.

    python3 tests/support/webhook_receiver.py --port PORT

Endpoints (``NAME`` groups the requests of one test endpoint):

- ``POST /ok/NAME``            → 200
- ``POST /fail/N/NAME``        → 500 for the first N requests, then 200
- ``POST /gone/NAME``          → 410
- ``POST /moved/NAME``         → 302 to ``/ok/NAME`` (a sender must not follow)
- ``POST /busy/SECS/NAME``     → 503 with ``Retry-After: SECS`` for the first
  request, then 200
- ``POST /slow/SECS/NAME``     → sleeps SECS before answering the first
  request (past the sender's timeout), answers later ones at once
- ``POST /sleepy/SECS/NAME``   → sleeps SECS before answering each request
  (the request is recorded as received before the sleep)
- ``PUT /_secrets/NAME``       → body: a JSON list of ``whsec_…`` secrets
  to verify NAME's deliveries with
- ``GET /_log/NAME``           → JSON: every request (webhook-id,
  timestamp, body, which secrets verified it, the status answered) and
  ``delivered``: the webhook-ids accepted, each once (deduplicated by
  webhook-id, as the specification asks receivers to)

A request whose signature no known secret verifies, or whose timestamp is
more than five minutes off, is answered 401 and recorded as such.
"""

import argparse
import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SECRETS = {}  # name -> [secret]
LOG = {}  # name -> [request record]
COUNTS = {}  # name -> requests seen
DELIVERED = {}  # name -> {webhook-id: first body}
TOLERANCE_S = 5 * 60


def verify(secrets, msg_id, timestamp, body, header):
    """Indices of the secrets that produced one of the header's signatures."""
    given = set()
    for item in header.split(" "):
        version, _, sig = item.partition(",")
        if version == "v1" and sig:
            given.add(sig)
    matched = []
    for i, secret in enumerate(secrets):
        if not secret.startswith("whsec_"):
            continue
        key = base64.b64decode(secret[len("whsec_"):])
        signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(expected, g) for g in given):
            matched.append(i)
    return matched


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_PUT(self):
        parts = self.path.strip("/").split("/")
        body = self.read_body()
        if len(parts) == 2 and parts[0] == "_secrets":
            with LOCK:
                SECRETS[parts[1]] = json.loads(body)
            return self.answer(204)
        self.answer(404)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "_log":
            name = parts[1]
            with LOCK:
                out = {
                    "requests": LOG.get(name, []),
                    "delivered": sorted(DELIVERED.get(name, {}).keys()),
                }
            return self.answer(200, json.dumps(out).encode())
        self.answer(404)

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        body = self.read_body()
        mode, name = parts[0], parts[-1]
        msg_id = self.headers.get("webhook-id", "")
        timestamp = self.headers.get("webhook-timestamp", "")
        signature = self.headers.get("webhook-signature", "")
        with LOCK:
            COUNTS[name] = COUNTS.get(name, 0) + 1
            n = COUNTS[name]
            secrets = list(SECRETS.get(name, []))
        matched = verify(secrets, msg_id, timestamp, body, signature)
        try:
            fresh = abs(time.time() - int(timestamp)) <= TOLERANCE_S
        except ValueError:
            fresh = False
        if not matched or not fresh:
            status = 401
        elif mode == "ok":
            status = 200
        elif mode == "fail":
            status = 500 if n <= int(parts[1]) else 200
        elif mode == "gone":
            status = 410
        elif mode == "moved":
            status = 302
        elif mode == "busy":
            status = 503 if n == 1 else 200
        elif mode in ("slow", "sleepy"):
            status = 200
        else:
            status = 404
        record = {
            "n": n,
            "webhook_id": msg_id,
            "timestamp": timestamp,
            "signature": signature,
            "verified_by": matched,
            "fresh": fresh,
            "body": json.loads(body or b"null"),
            "status": status,
        }
        with LOCK:
            LOG.setdefault(name, []).append(record)
        if mode == "slow" and n == 1:
            time.sleep(float(parts[1]))
        elif mode == "sleepy":
            time.sleep(float(parts[1]))
        if 200 <= status < 300:
            with LOCK:
                DELIVERED.setdefault(name, {}).setdefault(msg_id, record["body"])
        try:
            if status == 302:
                self.send_response(302)
                self.send_header("Location", "/ok/" + name)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if status == 503:
                payload = b'{"error": "busy"}'
                self.send_response(503)
                self.send_header("Retry-After", parts[1])
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self.answer(status, b'{"ok": true}' if status == 200 else b'{"error": "no"}')
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
