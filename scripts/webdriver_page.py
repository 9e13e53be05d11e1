"""Drives `rosetta serve`'s web page in a real headless Chromium through chromedriver, as a user would.

Usage: python3 scripts/webdriver_page.py CHROMEDRIVER SERVER_URL

It checks that the Beam field starts at the model's own beam, types two lines into the text box,
asks for three alternatives, clicks Translate, and checks the translations, the alternatives, the
attention heatmap and the Copy button (the clipboard's text); then asks for a beam above the
server's limit and checks that the page shows the server's error. Exits 1 on any failure of the
page, 2 when no browser can be started here. The W3C WebDriver protocol is plain HTTP and JSON, so
only the standard library is needed (no Selenium).
"""

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# Inputs and what the quickstart dates model (crates/rosetta-serve/tests/fixtures/dates-model) makes
# of them: the same pairs the other client checks use.
LINES = ["3. März 2021", "24.12.99"]
EXPECTED = ["2021-03-03", "1999-12-24"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    def __init__(self, chromedriver):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="rosetta-chrome-")
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while True:
            try:
                self.call("GET", "/status")
                break
            except OSError as e:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.cannot_start(e)
                time.sleep(0.1)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            f"--user-data-dir={self.profile}",
                        ]
                    },
                }
            }
        }
        try:
            self.session = self.call("POST", "/session", caps)["sessionId"]
        except (OSError, RuntimeError) as e:
            self.cannot_start(e)

    def cannot_start(self, why):
        # The machine cannot run the browser (not a fault of the page): exit status 2.
        self.proc.terminate()
        print(f"SKIPPED: chromedriver could not start a browser: {why}")
        sys.exit(2)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.read().decode()}") from None

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def element(self, css):
        found = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def script(self, source, *args):
        return self.s("POST", "/execute/sync", {"script": source, "args": list(args)})

    def wait(self, source, what, seconds=30):
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = self.script(source)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def close(self):
        try:
            self.s("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def main():
    chromedriver, url = sys.argv[1], sys.argv[2]
    d = Driver(chromedriver)
    try:
        d.s("POST", "/url", {"url": url + "/"})
        d.wait("return document.querySelectorAll('#model option').length > 0", "the model list")
        # The Beam field starts at the model's own beam, as `GET /v1/models` gives it.
        with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
            own_beam = json.loads(r.read())[0]["beam"]
        shown = d.script("return document.getElementById('beam').value")
        assert shown == str(own_beam), f"beam field {shown!r}, the model's own {own_beam}"
        # A user's keystrokes: the two lines, Enter between them.
        box = d.element("#input")
        d.s("POST", f"/element/{box}/value", {"text": LINES[0] + "\n" + LINES[1]})
        nbest = d.element("#nbest")
        d.s("POST", f"/element/{nbest}/clear", {})
        d.s("POST", f"/element/{nbest}/value", {"text": "3"})
        d.s("POST", f"/element/{d.element('#go')}/click", {})
        d.wait("return document.body.dataset.done === '1'", "the translation")
        output = d.s("GET", f"/element/{d.element('#output')}/text")
        assert output.split("\n") == EXPECTED, f"output {output!r}, expected {EXPECTED}"
        alternatives = d.script(
            "return [...document.querySelectorAll('#alternatives li')].map(li => li.textContent)"
        )
        assert len(alternatives) == 3, alternatives
        assert alternatives[0].startswith(EXPECTED[0] + "  ("), alternatives
        # A character-level model: one heatmap row per output character, one column per source
        # character and `</s>`.
        rows, cols = d.script(
            "const t = document.querySelector('#heatmap table.heat');"
            "return t ? [t.tBodies[0].rows.length, t.tHead.rows[0].cells.length - 1] : [0, 0]"
        )
        assert (rows, cols) == (len(EXPECTED[0]), len(LINES[0]) + 1), (rows, cols)
        # Copy: the clipboard then holds the output (clipboard access granted to the page).
        for name in ["clipboard-read", "clipboard-write"]:
            d.s("POST", "/permissions", {"descriptor": {"name": name}, "state": "granted"})
        d.s("POST", f"/element/{d.element('#copy')}/click", {})
        copied = d.s(
            "POST",
            "/execute/async",
            {
                "script": "const done = arguments[0];"
                "navigator.clipboard.readText().then(done, (e) => done('error: ' + e));",
                "args": [],
            },
        )
        assert copied == output, f"clipboard {copied!r}"
        # An error from the server reaches the page: a beam above the server's limit (16).
        beam = d.element("#beam")
        d.s("POST", f"/element/{beam}/clear", {})
        d.s("POST", f"/element/{beam}/value", {"text": "99"})
        d.s("POST", f"/element/{d.element('#go')}/click", {})
        error = d.wait("return document.getElementById('error').textContent", "the error message")
        assert "beam" in error, error
        print(
            f"web page OK (WebDriver): typed {len(LINES)} lines, got {EXPECTED}, "
            f"{len(alternatives)} alternatives, a {rows}x{cols} heatmap, Copy put the output on "
            f"the clipboard, a refused request showed: {error}"
        )
    finally:
        d.close()


if __name__ == "__main__":
    main()
