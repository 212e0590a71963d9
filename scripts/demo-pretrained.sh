#!/usr/bin/env bash
# Learned caches on a pretrained network, end to end on a fresh clone: Fashion-MNIST written as PNG class folders,
# ML.NET's image classification tutorial (the pretrained ResNet-18 of Microsoft.ML.DnnImageFeaturizer.ResNet18 plus
# L-BFGS maximum entropy on its 512 features) trained as the base model, the fitted pipeline imported as a Gati base
# model (checked against the pipeline on the test rows), candidate caches fitted on its cut points, the set chosen on
# fresh rows at 99 % agreement (95 % lower bound), and early exit evaluated against the full model on the test rows at
# batch 1 and 16. Both run on ONNX Runtime with the threading measured on this machine; the full model is one graph.
# About 30 minutes on 2 CPU cores (docs/your-own-model.md). Everything goes to ./out/pretrained/ (reused when rerun).
#
# Sizes (environment): CLASSIFIER_ROWS (4000), CACHE_ROWS (10000, predictor training), HOLDOUT_ROWS (3000, selectors
# and thresholds), FRESH_ROWS (3000, the optimizer's rows), TEST_ROWS (2000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
classifier_rows=${CLASSIFIER_ROWS:-4000}
cache_rows=${CACHE_ROWS:-10000}
holdout_rows=${HOLDOUT_ROWS:-3000}
fresh_rows=${FRESH_ROWS:-3000}
test_rows=${TEST_ROWS:-2000}
out=out/pretrained
images=$out/images
head=$out/head-$classifier_rows
run=$out/run-$classifier_rows-$cache_rows-$holdout_rows
dotnet build src/Gati.Cli -c Release -v quiet -nologo
dotnet build samples/Gati.Samples.PretrainedResNet -c Release -v quiet -nologo
gati=src/Gati.Cli/bin/Release/net10.0/gati
start=$SECONDS
step() { echo; echo "== $1 ($(( (SECONDS - start) / 60 )) min)"; }

step "Fashion-MNIST as image files in $images"
$gati images --output "$images"

step "The base model: ML.NET's tutorial pipeline on $classifier_rows training images"
if [[ ! -f $head/pipeline.zip ]]; then
  dotnet samples/Gati.Samples.PretrainedResNet/bin/Release/net10.0/Gati.Samples.PretrainedResNet.dll "$images" "$classifier_rows" 0 "$head"
else
  echo "reusing $head/pipeline.zip"
fi

mkdir -p "$run"
step "Import the fitted pipeline (checked against it on $test_rows test images)"
$gati import mlnet --pipeline "$head/pipeline.zip" --dataset images --data-dir "$images" --verify-rows "$test_rows" \
  --output "$run/base.zip"

step "Candidate caches on cut points 2-9 ($cache_rows training rows, $holdout_rows held out)"
$gati fit-caches --base-model "$run/base.zip" --dataset images --data-dir "$images" --layers 2-9 \
  --architectures grid:4:256 --train-rows "$cache_rows" --holdout-rows "$holdout_rows" --epochs 10 --patience 3 \
  --dump-dir "$run/dump" --output "$run/candidates.zip"

step "Choose the caches on $fresh_rows fresh rows (99 % agreement, 95 % lower bound)"
$gati optimize --model "$run/candidates.zip" --dataset images --data-dir "$images" --holdout-rows "$holdout_rows" \
  --fresh-rows "$fresh_rows" --agreement-target 0.99 --confidence 0.95 --output "$run/early-exit.zip"

step "Early exit against the full model on $test_rows test images"
$gati evaluate-early-exit --model "$run/early-exit.zip" --dataset images --data-dir "$images" --rows "$test_rows" \
  --batch-sizes 1,16 --output-dir "$run/report"
rm -rf "$run/dump"

echo
echo "Finished in $(( (SECONDS - start) / 60 )) min; models and report in $run."
awk -F, 'NR > 1 { size[$1] = $0 } END {
  split(size[1], one, ","); split(size[16], many, ",")
  printf "pretrained: batch 1 %.2fx (early exit %.1f ms vs full %.1f ms), batch 16 %.2fx, agreement %.1f %%, accuracy %.1f %% vs %.1f %%\n",
    one[13], one[7], one[10], many[13], 100 * one[3], 100 * one[4], 100 * one[5] }' "$run/report/early-exit.csv"
