#!/usr/bin/env bash
# The whole test suite: machine set-up, the sample notebooks executed headlessly (their outputs are then checked by
# NotebookOutputTests), and every test project. Usage: scripts/test.sh [extra dotnet test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
scripts/notebooks.sh
export GATI_NOTEBOOK_OUTPUTS="$PWD/samples/notebooks/out"
dotnet test Gati.MLNet.sln -c Release --logger "console;verbosity=normal" "$@"
