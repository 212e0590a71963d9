#!/usr/bin/env bash
# Soak run of the web sample (documented, not in CI): a bounded loopback load (N clients, one request at a time each)
# for --minutes, the watched model file replaced every --reload-seconds (a hot reload; two models alternate when
# --second-model is given), and the server stopped gracefully (SIGTERM: the host drains its requests, then disposes
# the pool) and started again --restarts times, evenly spaced. The clients retry connections refused while a server
# restarts, and (at most 3 times) a request whose connection closed before any response, as a server stopping at that
# instant does (both counted, not errors: POST /predict is idempotent); every other non-200 answer, a request still
# unanswered after its retries, or a response cut off is an error.
# Reports requests, reloads, errors, crashes and each server's resident memory (after warm-up, before each reload,
# at the end), prints a markdown report and writes it to --report.
#
# Usage: scripts/soak.sh [--minutes 30] [--model out/demo/early-exit.zip] [--second-model B.zip] [--clients 8]
#                        [--payload png|json] [--reload-seconds 60] [--restarts 3] [--warmup-seconds 20]
#                        [--report docs/results/soak.md]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30 model=out/demo/early-exit.zip second="" clients=8 payload=png reload_seconds=60 restarts=3 warmup=20
report=docs/results/soak.md
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2 ;;
    --model) model=$2 ;;
    --second-model) second=$2 ;;
    --clients) clients=$2 ;;
    --payload) payload=$2 ;;
    --reload-seconds) reload_seconds=$2 ;;
    --restarts) restarts=$2 ;;
    --warmup-seconds) warmup=$2 ;;
    --report) report=$2 ;;
    *) echo "error: unknown option $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
  shift 2
done
for n in "$minutes" "$clients" "$reload_seconds" "$restarts" "$warmup"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "error: '$n' is not a whole number" >&2; exit 2; }
done
[ -f "$model" ] || { echo "error: no model at $model (scripts/demo.sh writes out/demo/early-exit.zip, or pass --model)" >&2; exit 2; }
[ -z "$second" ] || [ -f "$second" ] || { echo "error: no model at $second" >&2; exit 2; }
model_given=$model second_given=$second  # as typed, for the report's command line (no machine paths)
model=$(realpath "$model"); second=${second:+$(realpath "$second")}

scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build samples/Gati.Samples.WebApi -c Release -v quiet -nologo
dotnet build samples/Gati.Samples.LoadTest -c Release -v quiet -nologo

work=$(mktemp -d /tmp/gati-soak.XXXXXX)
live="$work/model.zip"
cp "$model" "$live"
port=0
for _ in $(seq 1 50); do
  candidate=$((5100 + RANDOM % 800))
  if ! (echo >"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
done
[ "$port" -ne 0 ] || { echo "error: no free loopback port found" >&2; exit 1; }
url="http://127.0.0.1:$port"

server=0 servers=0 crashes=0
declare -a server_rows=()
rss_mb() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
# The managed heap after the last GC (the runtime's System.Runtime meter at /metrics), to tell managed from native growth.
heap_mb() { curl -sf "$url/metrics" | awk '/^dotnet_gc_last_collection_heap_size_bytes/ { s += $2; n++ } END { if (n) printf "%.0f", s / 1048576; else printf "?" }' || echo "?"; }
# "RSS (managed heap)" in MB.
memory_mb() { echo "$(rss_mb "$server") ($(heap_mb))"; }

start_server() {
  servers=$((servers + 1))
  # env: the pool's log category has dots, which a shell assignment cannot name. Its reload lines are counted below.
  env Gati__ModelPath="$live" Gati__WatchForChanges=true Gati__Pool__Device=cpu Gati__Pool__ReloadDebounceMs=300 \
    Logging__LogLevel__Default=Warning "Logging__LogLevel__Gati.Extensions.ML=Information" \
    Logging__Console__FormatterOptions__SingleLine=true \
    dotnet samples/Gati.Samples.WebApi/bin/Release/net10.0/Gati.Samples.WebApi.dll --urls "$url" \
    >"$work/server-$servers.log" 2>&1 &
  server=$!
  for _ in $(seq 1 240); do
    curl -sf "$url/health" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { echo "error: the server exited while starting (log: $work/server-$servers.log)" >&2; exit 1; }
    sleep 0.5
  done
  server_started=$SECONDS warm_rss="" samples=""
  echo "server $servers (pid $server) listening on $url"
}

# Generation reloads the running server has made (its /model endpoint); "?" if it does not answer.
generation() { curl -sf "$url/model" | sed -n 's/.*"generation":\([0-9]*\).*/\1/p' || echo "?"; }

stop_server() {  # $1: how it ended (restart / end)
  local rss generation_now code=0
  rss=$(memory_mb); generation_now=$(generation)
  kill -TERM "$server"
  wait "$server" || code=$?
  server_rows+=("| $servers | $1 | $((SECONDS - server_started)) | ${generation_now:-?} | ${warm_rss:-n/a} | ${samples:-n/a} | $rss | $code |")
  [ "$code" -eq 0 ] || crashes=$((crashes + 1))
}

replace_model() {
  local source=$model
  if [ -n "$second" ] && [ $((reloads % 2)) -eq 0 ]; then source=$second; fi
  cp "$source" "$work/staging.zip"
  mv -f "$work/staging.zip" "$live"
  reloads=$((reloads + 1))
}

start_server
echo "soak: $minutes min, $clients clients ($payload), a model replacement every ${reload_seconds}s, $restarts restart(s); work dir $work"
dotnet samples/Gati.Samples.LoadTest/bin/Release/net10.0/Gati.Samples.LoadTest.dll --url "$url" --minutes "$minutes" \
  --clients "$clients" --payload "$payload" --retry-refused --retry-unanswered --label "soak" >"$work/load.log" 2>&1 &
load=$!
began=$SECONDS reloads=0 next_reload=$reload_seconds restart_index=1
duration=$((minutes * 60))
never=$((1 << 30))
next_restart=$((restarts > 0 ? duration * restart_index / (restarts + 1) : never))
while kill -0 "$load" 2>/dev/null; do
  sleep 1
  elapsed=$((SECONDS - began))
  if ! kill -0 "$server" 2>/dev/null; then
    code=0; wait "$server" || code=$?
    echo "server $servers (pid $server) died with code $code" >&2
    server_rows+=("| $servers | crashed | $((SECONDS - server_started)) | ? | ${warm_rss:-n/a} | ${samples:-n/a} | - | $code |")
    crashes=$((crashes + 1))
    start_server
    continue
  fi
  if [ -z "$warm_rss" ] && [ $((SECONDS - server_started)) -ge "$warmup" ]; then warm_rss=$(memory_mb); fi
  if [ "$elapsed" -ge "$next_restart" ]; then
    echo "restart $restart_index at ${elapsed}s"
    restart_times="${restart_times:+$restart_times, }$elapsed"
    stop_server restart
    start_server
    restart_index=$((restart_index + 1))
    next_restart=$((restart_index <= restarts ? duration * restart_index / (restarts + 1) : never))
  fi
  if [ "$elapsed" -ge "$next_reload" ] && [ "$elapsed" -lt "$duration" ]; then
    # Memory before a replacement, once the server is past its warm-up (not right after a restart).
    if [ $((SECONDS - server_started)) -ge "$warmup" ]; then samples="${samples:+$samples, }$(memory_mb)"; fi
    replace_model
    echo "model replaced at ${elapsed}s (replacement $reloads)"
    next_reload=$((next_reload + reload_seconds))
  fi
done
load_code=0; wait "$load" || load_code=$?
stop_server end

summary=$(grep '^status codes' "$work/load.log" || true)
failures=$(grep '^failed requests started at' "$work/load.log" || true)
reasons=$(grep '^failure reasons' "$work/load.log" || true)
requests=$(grep '^| soak' "$work/load.log" | awk -F'|' '{ gsub(/ /, "", $3); print $3 }')
errors=$(grep '^| soak' "$work/load.log" | awk -F'|' '{ gsub(/ /, "", $9); print $9 }')
reloaded=$(cat "$work"/server-*.log | grep -c "replaces generation" || true)
failed_reloads=$(cat "$work"/server-*.log | grep -c "keeps serving" || true)
mkdir -p "$(dirname "$report")"
{
  echo "Soak run of the web sample: $minutes min on loopback, $clients clients ($payload), the model file replaced every ${reload_seconds} s, $restarts graceful restart(s); $(nproc) CPUs; $(date -u +%Y-%m-%d)."
  echo "Command: scripts/soak.sh --minutes $minutes --model $model_given${second_given:+ --second-model $second_given} --clients $clients --payload $payload --reload-seconds $reload_seconds --restarts $restarts --warmup-seconds $warmup"
  echo
  echo "| requests | errors | connections refused while restarting (retried) | closed before any response (retried) | model replacements | reloads served | failed reloads | servers | crashes |"
  echo "|---|---|---|---|---|---|---|---|---|"
  echo "| ${requests:-?} | ${errors:-?} | $(echo "$summary" | sed -n 's/.*refused and retried: \([0-9]*\).*/\1/p') | $(echo "$summary" | sed -n 's/.*unanswered and retried: \([0-9]*\).*/\1/p') | $reloads | $reloaded | $failed_reloads | $servers | $crashes |"
  echo
  echo "Load (the load generator's figures):"
  echo
  grep -E '^\| run \||^\|---|^\| soak' "$work/load.log" || echo "no result (see $work/load.log)"
  echo "($summary)"
  if [ -n "$failures" ]; then echo; echo "${failures}; restarts at (s): ${restart_times:-none}."; fi
  if [ -n "$reasons" ]; then echo; echo "$reasons"; fi
  echo
  echo "Server resident memory in MB, with the managed heap after the last GC in brackets: after ${warmup} s of warm-up, before each model replacement (once warm), at its end."
  echo
  echo "| server | ended by | lived (s) | last generation | after warm-up | before each replacement | at the end | exit code |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${server_rows[@]}"
} | tee "$report"
echo "logs: $work"
[ "$load_code" -eq 0 ] && [ "$crashes" -eq 0 ] && [ "$failed_reloads" -eq 0 ]
