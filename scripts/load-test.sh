#!/usr/bin/env bash
# Load test of the web sample on loopback, on both backends (ONNX Runtime, TorchSharp) with micro-batching on and off:
# starts the server with a model, sends a fixed number of requests from concurrent clients, and writes the figures and
# where a request's time went on the server (from its /metrics) to docs/results/load-test.md.
# Usage: scripts/load-test.sh [model.zip (default out/demo/early-exit.zip)] [requests (5000)] [clients (16)] [backends (OnnxRuntime TorchSharp)]
#        [batching (true false)] [payloads (png json)] [report (docs/results/load-test.md)]
# Several models in one report: a model argument of the form "a.zip b.zip" runs each in turn (e.g. early exit and the full
# model of an imported network: scripts/load-test.sh "out/x/early-exit.zip out/x/base.zip" 2000 8 OnnxRuntime false png).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
models=${1:-out/demo/early-exit.zip}
requests=${2:-5000}
clients=${3:-16}
backends=${4:-OnnxRuntime TorchSharp}
batchings=${5:-true false}
payloads=${6:-png json}
report=${7:-docs/results/load-test.md}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build samples/Gati.Samples.WebApi -c Release -v quiet -nologo
dotnet build samples/Gati.Samples.LoadTest -c Release -v quiet -nologo
breakdown=$(mktemp)
trap 'rm -f "$breakdown"' EXIT
mkdir -p "$(dirname "$report")"
{
  echo "Load test of $(for m in $models; do basename "$m"; done | paste -sd ' '): $requests requests from $clients clients on loopback; $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')); $(date -u +%Y-%m-%d)."
  echo
  echo "| run | requests | clients | req/s | mean ms | p50 ms | p99 ms | errors | exit early | server memory (before -> after) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$report"
for model in $models; do
  model=$(realpath "$model")
  name=$(basename "$model" .zip)
  for backend in $backends; do
    for batching in $batchings; do
      port=$((5080 + RANDOM % 1000))
      Gati__ModelPath="$model" Gati__Pool__Device=cpu Gati__Pool__Backend=$backend Gati__Pool__Batching=$batching Logging__LogLevel__Default=Warning \
        dotnet samples/Gati.Samples.WebApi/bin/Release/net10.0/Gati.Samples.WebApi.dll --urls "http://127.0.0.1:$port" &
      server=$!
      for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done
      for payload in $payloads; do
        dotnet samples/Gati.Samples.LoadTest/bin/Release/net10.0/Gati.Samples.LoadTest.dll --url "http://127.0.0.1:$port" \
          --requests "$requests" --clients "$clients" --payload "$payload" --server-pid "$server" \
          --label "$name, $backend, batching $batching, $payload" --output "$report" --breakdown "$breakdown" | tail -4
      done
      kill "$server"; wait "$server" 2>/dev/null || true
    done
  done
done
{
  echo
  echo "Where a request's time went (means over each run, ms; from the server's /metrics before and after):"
  echo
  echo "| run | client mean ms | server mean ms (/predict) | read body | decode | queue + engine | of which: batch wait (per batch) | engine call (per batch) | inputs per batch | outside the server (client - server) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  cat "$breakdown"
} >> "$report"
echo
cat "$report"
