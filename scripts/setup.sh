#!/usr/bin/env bash
# One-time machine set-up for Gati.MLNet on Debian 12 (idempotent; every other script calls it).
# Installs: the Fashion-MNIST dataset package, fonts for charts, the dotnet-repl tool. Checks: the .NET 10 SDK.
set -euo pipefail

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v dotnet >/dev/null 2>&1 || ! dotnet --list-sdks | grep -q '^10\.'; then
  echo "error: the .NET 10 SDK is required (https://dotnet.microsoft.com/download; on Debian 12: packages.microsoft.com's dotnet-sdk-10.0)." >&2
  exit 1
fi

# dotnet-repl executes the sample notebooks headlessly (scripts/notebooks.sh).
export PATH="$PATH:$HOME/.dotnet/tools"
if ! command -v dotnet-repl >/dev/null 2>&1; then
  echo "Installing the dotnet-repl tool (runs the notebooks)..."
  dotnet tool install -g dotnet-repl --version 0.3.259 >/dev/null
fi

# Fonts for the PNG charts (ScottPlot); Debian images without any font render blank labels.
if ! fc-list 2>/dev/null | grep -qi dejavu; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq fonts-dejavu-core fontconfig >/dev/null
fi

if [ ! -e /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  echo "Installing Debian package dataset-fashion-mnist (31 MB)..."
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
