"""A loopback HTTP server for the HTTPRequest plugin's tests. Prints its port, then serves:
  GET  /ok       200 "hello <X-TaskHost-Task>"
  POST /echo     200 with the request body
  GET  /busy     429 with Retry-After: 2
  GET  /missing  404
  GET  /slow     200 after 20 ms; counts concurrent /slow requests
  GET  /stats    200 {"max_concurrent_slow": N, "slow": N}
It exits when its stdin closes (the test's end)."""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
state = {"current": 0, "max": 0, "slow": 0}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=None):
        data = body.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/ok"):
            self.reply(200, "hello " + self.headers.get("X-TaskHost-Task", "?"))
        elif self.path == "/busy":
            self.reply(429, "slow down", {"Retry-After": "2"})
        elif self.path == "/slow":
            with lock:
                state["current"] += 1
                state["slow"] += 1
                state["max"] = max(state["max"], state["current"])
            time.sleep(0.02)
            with lock:
                state["current"] -= 1
            self.reply(200, "slow done")
        elif self.path == "/stats":
            with lock:
                self.reply(200, json.dumps({"max_concurrent_slow": state["max"], "slow": state["slow"]}))
        else:
            self.reply(404, "no such page")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.reply(200, self.rfile.read(length).decode())


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
