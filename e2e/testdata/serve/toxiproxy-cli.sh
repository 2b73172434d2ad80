#!/usr/bin/env bash
# The Toxiproxy flow of TestServeToxiproxyClient through toxiproxy-cli, against finproxy
# serve. Run by TestServeToxiproxyCLI with: CLI (toxiproxy-cli), TOXIPROXY_URL (serve's
# API), FINPROXY, CLIENT_NS (the lab's client namespace), UP (server address:port),
# SOCK (serve's unix socket). Exits non-zero at the first check that fails.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
# client MODE [ARGS]: one connection of the built-in client; prints its JSON record.
client() {
  local mode=$1; shift
  ip netns exec "$CLIENT_NS" "$FINPROXY" app client --connect "$UP" --mode "$mode" --count 1 "$@"
}
elapsed_ms() { sed -n 's/.*"elapsed_ms":\([0-9.]*\).*/\1/p' | cut -d. -f1; }

echo "== create"
"$CLI" create --listen "$UP" --upstream "$UP" app
"$CLI" list | grep -q app || fail "list does not show the proxy"
base=$(client request-close | elapsed_ms)

echo "== latency 300 ms"
"$CLI" toxic add --type latency --attribute latency=300 app
"$CLI" inspect app | grep -q latency_downstream || fail "inspect does not list the toxic"
ms=$(client request-close | elapsed_ms)
echo "latency: ${ms} ms (without: ${base} ms)"
[ "$ms" -ge 300 ] || fail "request answered in ${ms} ms under latency 300"
"$CLI" toxic remove --toxicName latency_downstream app

echo "== reset_peer"
"$CLI" toxic add --type reset_peer --attribute timeout=0 app
client expect-reset >/dev/null || fail "no ECONNRESET under reset_peer"
"$CLI" toxic remove --toxicName reset_peer_downstream app

echo "== lost_final_ack"
"$CLI" toxic add --type lost_final_ack --toxicName laf app
client request-close >/dev/null || fail "the connection failed under lost_final_ack"
sleep 0.5 # the server's FIN retransmission (about 200 ms later) and its re-ACK
"$FINPROXY" ctl --addr "unix:$SOCK" counters | tr -d ' \n' |
  grep -q '"rule":"laf:drop-final-ack","matched":1,"passed":0,"dropped":1' || fail "laf:drop-final-ack did not drop one final ACK"

echo "== timeout 500 ms: the reply dropped, the connection reset"
"$CLI" toxic add --type timeout --attribute timeout=500 app
ms=$(client expect-reset | elapsed_ms) || fail "no ECONNRESET under timeout 500"
echo "timeout 500: ECONNRESET after ${ms} ms"
[ "$ms" -ge 500 ] || fail "ECONNRESET after ${ms} ms under timeout 500"
"$CLI" toxic remove --toxicName timeout_downstream app

echo "== refused toxic"
if out=$("$CLI" toxic add --type slicer --attribute average_size=10 app 2>&1); then
  fail "slicer accepted: $out"
fi
echo "$out" | grep -q "does not copy the stream" || fail "slicer refused without the reason: $out"

echo "== toggle (disabled: connections reset)"
"$CLI" toggle app
if client request-close --timeout 2s >/dev/null 2>&1; then fail "a connection succeeded through a disabled proxy"; fi
"$CLI" toggle app
client request-close >/dev/null || fail "the connection failed after the proxy was enabled again"

echo "== delete"
"$CLI" delete app
"$CLI" list | grep -q app && fail "the proxy is still listed"
echo "ok"
