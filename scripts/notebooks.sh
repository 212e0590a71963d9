#!/usr/bin/env bash
# Executes the sample notebooks headlessly with dotnet-repl (installed by scripts/setup.sh) against the locally
# built library, writing the executed notebooks (with their outputs) to samples/notebooks/out/.
# Exit code is non-zero when a cell fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$HOME/.dotnet/tools" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet publish samples/notebooks/NotebookSupport -c Release -r linux-x64 --self-contained false -o samples/notebooks/lib -v quiet -nologo
cd samples/notebooks
mkdir -p out
# Notebooks reference lib/ relative to this folder; they run in order (02 and 03 reuse 01's base model).
for notebook in 0*.ipynb; do
  name=$(basename "$notebook" .ipynb)
  echo "Running $name..."
  start=$(date +%s)
  dotnet-repl --run "$notebook" --exit-after-run --output-format ipynb --output-path "out/$name.ipynb" > "out/$name.log" 2>&1 \
    || { echo "Notebook $name failed (executed copy with the error: samples/notebooks/out/$name.ipynb)"; tail -40 "out/$name.log"; exit 1; }
  echo "  done in $(( $(date +%s) - start )) s"
done
