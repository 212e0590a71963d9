#!/usr/bin/env bash
# Runs the whole test suite (after machine set-up). Usage: scripts/test.sh [extra dotnet test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet test Gati.MLNet.sln -c Release --logger "console;verbosity=normal" "$@"
