#!/usr/bin/env bash
# The long fuzz run (docs/hardening.md): the CI fuzz tests with more cases per target, one target at a time.
# Usage: scripts/fuzz-long.sh [scale (1)]   — scale multiplies every target's case count.
# Summaries go to out/fuzz/summary.txt (one line per target: cases, outcomes, failures, seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-1}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
mkdir -p out/fuzz
export GATI_FUZZ_REPORT="$PWD/out/fuzz/summary.txt"
: > "$GATI_FUZZ_REPORT"
dotnet build tests/Gati.MLNet.Tests -c Release
dotnet build tests/Gati.Samples.WebApi.Tests -c Release
status=0
run() { # project, test name, cases
  GATI_FUZZ_ITERATIONS=$(( $3 * scale )) dotnet test "tests/$1" -c Release --no-build --filter "FullyQualifiedName~$2" \
    --logger "console;verbosity=normal" > "out/fuzz/$2.log" 2>&1 || status=1
  tail -n 1 "$GATI_FUZZ_REPORT"
}
run Gati.MLNet.Tests LoadFashionMnist_GeneratedAndHostileIdxFiles 20000
run Gati.MLNet.Tests LoadCifar_GeneratedAndHostileBinaryFiles 20000
run Gati.MLNet.Tests LoadImageFolder_GeneratedAndHostileImages 6000
run Gati.MLNet.Tests LoadModel_CorruptedModelZips 15000
run Gati.Samples.WebApi.Tests FromBody_GeneratedAndHostileBodies 100000
exit $status
