#!/usr/bin/env bash
# The main job, end to end on the real Fashion-MNIST: train (or reuse) a narrow ResNet-18, fit learned caches on
# its layers, choose which caches to keep, and evaluate early exit against the full model at batch 1 and 64
# (gati demo). About 6-8 minutes on 2 CPU cores. Models and the report go to ./out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build src/Gati.Cli -c Release -v quiet -nologo
src/Gati.Cli/bin/Release/net10.0/gati demo --output-dir out/demo --device auto "$@"
