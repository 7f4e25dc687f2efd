#!/usr/bin/env bash
# Takes the README's pictures of the page: a real relayd in chat mode, a few clients over TCP
# talking in a room (one line of HTML among them, shown as text; a moderator the operator made,
# marked in the member list, muting a spammer), and headless
# Chromium (Debian's chromium) on the chat view and on the danmaku view.
#
#   contrib/screenshots.sh            # writes docs/chat-view.png and docs/danmaku-view.png
#
# Chromium is driven by playwright-core (from the npm registry, installed into a temporary
# directory, never committed): `chromium --screenshot` shoots at the load event, before the
# WebSocket's lines arrive, and its virtual time freezes the danmaku lines at the edge.
# Needs Debian's chromium, nc (netcat-openbsd), node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$((20000 + RANDOM % 20000))
wsport=$((port + 1))
target/release/relayd --chat --history 30 --bind 127.0.0.1:$port --ws-bind 127.0.0.1:$wsport \
    --admin "$tmp/sock" -q 2>"$tmp/log" &
for _ in $(seq 50); do nc -z 127.0.0.1 $wsport 2>/dev/null && break; sleep 0.1; done

# Viewers and a bot in room "stream", talking while the pictures are taken (one line of HTML
# among them: the page shows it as text).
talk() { # NAME LINES...
    local name=$1; shift
    {
        printf '/nick %s\n/join stream\n' "$name"
        for _ in $(seq 12); do
            for line in "$@"; do sleep "0.$((RANDOM % 9 + 1))"; printf '%s\n' "$line"; done
        done
    } | nc 127.0.0.1 $port >/dev/null &
}
talk mod "welcome to the stream! be nice" "first-timers: say hi" "/mute spammer 10m selling followers"
talk spammer "BUY CHEAP FOLLOWERS http://spam.example"
talk bot "<img src=x onerror=alert(1)> shows as text, not an image"
talk ana "hi all" "that last play was amazing" "replay please!!"
talk kenji "hello from Osaka" "GG"
talk lee "88888888" "lol" "what a comeback" "the commentary is great tonight"
sleep 0.3
target/release/relayd ctl --admin "$tmp/sock" op mod stream >/dev/null
sleep 0.7

npm install --silent --prefix "$tmp/pw" playwright-core@1 >/dev/null
cat >"$tmp/shoot.js" <<'JS'
const { chromium } = require(process.env.PW + "/node_modules/playwright-core");
(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 900, height: 520 } });
  for (const [file, query] of [["docs/chat-view.png", ""], ["docs/danmaku-view.png", "&view=danmaku"]]) {
    await page.goto(`http://127.0.0.1:${process.env.WSPORT}/?room=stream&name=viewer${query}`);
    await page.waitForTimeout(4000);  // lines arrive and fly meanwhile
    await page.screenshot({ path: file });
  }
  await browser.close();
})();
JS
PW="$tmp/pw" WSPORT=$wsport node "$tmp/shoot.js"
echo "wrote docs/chat-view.png docs/danmaku-view.png"
