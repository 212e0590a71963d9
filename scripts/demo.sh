#!/usr/bin/env bash
# The main job: train a narrow ResNet-18 on a Fashion-MNIST subset with gati train-base, then evaluate it
# with gati evaluate. About 3-5 minutes on 2 CPU cores. Outputs go to ./out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build src/Gati.Cli -c Release -v quiet -nologo
gati=src/Gati.Cli/bin/Release/net10.0/gati
mkdir -p out/demo
"$gati" train-base --dataset fashion-mnist --arch resnet18 --width 16 --epochs 3 --train-rows 12000 \
  --batch-size 128 --lr 0.1 --device auto --output out/demo/resnet18-w16.zip --checkpoint out/demo/resnet18-w16.ckpt
"$gati" evaluate --model out/demo/resnet18-w16.zip --dataset fashion-mnist --split test --report-dir out/demo
