#!/usr/bin/env bash
# The whole test suite: machine set-up, the sample notebooks executed headlessly (their outputs are then checked by
# NotebookOutputTests), and every test project. Usage: scripts/test.sh [extra dotnet test arguments]
# The test projects run in parallel, so their output interleaves: when a test fails, the script ends by printing every
# failed test again with its message (the full log stays in TestResults/test-run.log).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
scripts/notebooks.sh
export GATI_NOTEBOOK_OUTPUTS="$PWD/samples/notebooks/out"
mkdir -p TestResults
log=TestResults/test-run.log
status=0
dotnet test Gati.MLNet.sln -c Release --logger "console;verbosity=normal" "$@" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo
  echo "=== dotnet test exited with $status; failed tests (from $log) ==="
  # A failed test's line starts with "  Failed "; its message and stack follow until the next result line.
  awk '/^  Failed / { show = 1 } /^  (Passed|Skipped) / { show = 0 } show && n < 400 { print; n++ }' "$log"
  grep -E "error (CS|MSB|NETSDK)[0-9]+|Test Run Aborted|The active test run was aborted|exited with error" "$log" | sort -u | head -40 || true
fi
exit "$status"
