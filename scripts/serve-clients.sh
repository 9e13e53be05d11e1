#!/usr/bin/env bash
# Real clients against `rosetta serve` on loopback:
#   - PyPI `libretranslatepy` (form-encoded POST /translate, GET /languages with a body, POST /detect),
#   - npm `libretranslate-ts` (JSON POST /translate, `api_key: null`) and `libretranslate` (GET
#     /languages first, then JSON with an unknown `apiKey` field),
#   - the web page in a real headless Chromium, driven through chromedriver as a user would (type,
#     Translate, alternatives, heatmap, Copy, a refused request) and opened from a `?text=` link,
# then SIGTERM, which must stop the server with exit status 0.
# Packages are installed into a temporary directory; a client whose package or runtime cannot be had
# (no network, no chromium) is reported as SKIPPED, and any real failure exits non-zero.
# Usage: scripts/serve-clients.sh [ROSETTA_BINARY]   (default: target/debug/rosetta)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/rosetta}
command -v python3 > /dev/null || { echo "SKIPPED: every client check needs python3"; exit 0; }
MODEL=crates/rosetta-serve/tests/fixtures/dates-model
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"

"$BIN" serve --device cpu --model "de-en=$MODEL" --addr "127.0.0.1:$PORT" 2> "$WORK/server.log" &
SERVER=$!
ready() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/ready", timeout=2)' "$URL" 2> /dev/null; }
for _ in $(seq 1 300); do
  ready && break
  sleep 0.1
done
ready || { cat "$WORK/server.log"; echo "FAIL: server not ready"; exit 1; }
EXPECTED=2021-03-03
FAILED=0

echo "== PyPI libretranslatepy"
if python3 -m venv "$WORK/venv" > /dev/null 2>&1 && "$WORK/venv/bin/pip" install -q libretranslatepy > "$WORK/pip.log" 2>&1; then
  if "$WORK/venv/bin/python" - "$URL" "$EXPECTED" <<'PY'
import sys
from libretranslatepy import LibreTranslateAPI
url, expected = sys.argv[1], sys.argv[2]
lt = LibreTranslateAPI(url)
got = lt.translate("3. März 2021", "de", "en")
assert got == expected, got
assert lt.translate("3. März 2021", "auto", "en") == expected
langs = lt.languages()
assert {"code": "de", "name": "German", "targets": ["en"]} in langs, langs
assert lt.detect("3. März 2021")[0]["language"] == "de"
print("libretranslatepy: translate, auto, languages, detect OK:", got)
PY
  then :; else FAILED=1; fi
else
  echo "SKIPPED: pip could not install libretranslatepy (see below)"; tail -3 "$WORK/pip.log"
fi

echo "== npm libretranslate-ts and libretranslate"
if (cd "$WORK" && npm init -y > /dev/null && npm install --silent --no-audit --no-fund libretranslate-ts libretranslate > npm.log 2>&1); then
  if (cd "$WORK" && node - "$URL" "$EXPECTED" <<'JS'
const [url, expected] = process.argv.slice(2);
const { libreTranslate } = require("libretranslate-ts");
const { translate } = require("libretranslate");
(async () => {
  libreTranslate.setApiEndpoint(url);
  const r = await libreTranslate.translate("3. März 2021", "de", "en");
  if (r.translatedText !== expected) throw new Error("libretranslate-ts: " + JSON.stringify(r));
  const langs = await libreTranslate.listLanguages();
  if (!langs.some((l) => l.code === "de")) throw new Error("languages: " + JSON.stringify(langs));
  const t = await translate({ query: "3. März 2021", source: "de", target: "en", apiurl: url });
  if (t !== expected) throw new Error("libretranslate: " + JSON.stringify(t));
  console.log("libretranslate-ts and libretranslate OK:", r.translatedText, t);
})().catch((e) => { console.error("FAIL:", e.message); process.exit(1); });
JS
  ); then :; else FAILED=1; fi
else
  echo "SKIPPED: npm could not install the clients"; tail -3 "$WORK/npm.log" 2>/dev/null || true
fi

echo "== web page in headless Chromium"
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
DRIVER=$(command -v chromedriver || true)
if [ -n "$DRIVER" ] && [ -n "$CHROME" ]; then
  # As a user: type, click Translate, read the result, alternatives, heatmap, Copy, an error.
  python3 scripts/webdriver_page.py "$DRIVER" "$URL" || { [ $? -eq 2 ] || FAILED=1; }
else
  echo "SKIPPED: no chromedriver (apt-get install chromium chromium-driver)"
fi
if [ -n "$CHROME" ]; then
  # A link that carries the text (`/?text=…`) translates on load.
  DOM=$("$CHROME" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$WORK/chrome" \
        --virtual-time-budget=15000 --dump-dom "$URL/?text=3.%20M%C3%A4rz%202021" 2> "$WORK/chrome.log" || true)
  if grep -q "<div id=\"output\" aria-live=\"polite\">$EXPECTED</div>" <<< "$DOM" && grep -q 'data-done="1"' <<< "$DOM" \
     && grep -q '<table class="heat">' <<< "$DOM"; then
    echo "web page OK (?text= link): translated, alternatives and attention heatmap rendered"
  else
    echo "FAIL: the page did not show the translation"; grep -o '<div id="output"[^<]*</div>' <<< "$DOM" || true
    grep -o '<p id="error">[^<]*</p>' <<< "$DOM" || true
    FAILED=1
  fi
else
  echo "SKIPPED: no chromium (apt-get install chromium)"
fi

echo "== graceful shutdown"
kill -TERM $SERVER
if wait $SERVER; then echo "server exited 0 after SIGTERM"; else echo "FAIL: exit status $?"; FAILED=1; fi
SERVER=
exit $FAILED
