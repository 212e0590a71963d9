using Gati.MLNet.Tests.Infrastructure;

namespace Gati.Cli.Tests;

/// <summary>The multi-step commands on tiny real Fashion-MNIST subsets (narrow models, one epoch): they must run end to end and write their reports.</summary>
public sealed class PipelineCommandTests
{
    private static string Data => RealData.FashionMnistDirectory;

    private static void Ok((int ExitCode, string Output) result) => Assert.True(result.ExitCode == 0, result.Output);

    [Fact]
    public void Demo_TinySettings_RunsEveryStageAndWritesTheReport()
    {
        using var temp = new TempDirectory();
        var (exit, output) = CliHost.Invoke("demo", "--output-dir", temp.Path, "--data-dir", Data, "--width", "4", "--base-train-rows", "600", "--base-epochs", "1",
            "--cache-layers", "3,6", "--cache-architectures", "conv,fc:8", "--cache-train-rows", "600", "--cache-epochs", "1", "--holdout-rows", "400",
            "--eval-rows", "120", "--device", "cpu");
        Assert.True(exit == 0, output);
        foreach (var stage in new[] { "== 1. base model ==", "== 2. learned caches ==", "== 3. choose the caches ==", "== 4. early exit against the full model" })
            Assert.Contains(stage, output);
        Assert.True(File.Exists(Path.Combine(temp.Path, "early-exit.zip")));
        Assert.True(File.Exists(Path.Combine(temp.Path, "early-exit.zip.plan.md")));
        var report = File.ReadAllText(Path.Combine(temp.Path, "report", "early-exit.md"));
        Assert.Contains("| batch | agreement with base |", report);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(temp.Path, "report", "early-exit.csv")).Length);
        Assert.Equal([0x89, 0x50, 0x4E, 0x47], File.ReadAllBytes(Path.Combine(temp.Path, "report", "exits.png"))[..4]);
        // Reports show the command as typed, not this machine's path of gati.dll.
        Assert.Contains($"gati demo --output-dir {temp.Path} --data-dir {Data} --width 4", report);
        Assert.Contains("\ngati demo --output-dir", File.ReadAllText(Path.Combine(temp.Path, "early-exit.zip.plan.md")));
        Assert.DoesNotContain(".dll", report);

        // A second run reuses the base model.
        (exit, output) = CliHost.Invoke("demo", "--output-dir", temp.Path, "--data-dir", Data, "--width", "4", "--base-train-rows", "600", "--base-epochs", "1",
            "--cache-layers", "6", "--cache-architectures", "conv", "--cache-train-rows", "300", "--cache-epochs", "1", "--holdout-rows", "400",
            "--eval-rows", "50", "--device", "cpu");
        Assert.True(exit == 0, output);
        Assert.Contains("Reusing", output);
    }

    [Fact]
    public void TrainPredictorsThenReportThenFitCachesFromThem_Work()
    {
        using var temp = new TempDirectory();
        var basePath = temp.File("base.zip");
        Ok(CliHost.Invoke("train-base", "--data-dir", Data, "--width", "4", "--epochs", "1", "--train-rows", "600", "--test-rows", "100", "--device", "cpu", "--output", basePath));
        var predictors = temp.File("predictors.zip");
        var (exit, output) = CliHost.Invoke("train-predictors", "--base-model", basePath, "--data-dir", Data, "--layers", "7-8", "--architectures", "fc:16,pool:64:8,conv",
            "--train-rows", "500", "--holdout-rows", "300", "--augmented-copies", "1", "--epochs", "1", "--features", "dump", "--float16", "--device", "cpu", "--output", predictors);
        Assert.True(exit == 0, output);
        Assert.Contains("Features: dump (requested", output);
        Assert.Contains("1000 training rows (500 images and 1 augmented copies of each)", output);
        Assert.True(File.Exists(Path.Combine(predictors + ".features", "train", "manifest.json")));

        var reportDir = Path.Combine(temp.Path, "report");
        (exit, output) = CliHost.Invoke("report", "predictors", "--model", predictors, "--data-dir", Data, "--rows", "200", "--output-dir", reportDir,
            "--latency-runs", "5", "--device", "cpu");
        Assert.True(exit == 0, output);
        var markdown = File.ReadAllText(Path.Combine(reportDir, "predictors.md"));
        Assert.Contains("| layer | FC(16) | Pool(64, 8) | Conv(3, 1) |", markdown);
        Assert.Contains("Cost at layer 7", markdown);
        Assert.Equal(7, File.ReadAllLines(Path.Combine(reportDir, "agreement.csv")).Length);
        Assert.Equal(4, File.ReadAllLines(Path.Combine(reportDir, "cost.csv")).Length);
        var confidence = File.ReadAllLines(Path.Combine(reportDir, "confidence.csv"));
        Assert.Equal(1 + 6 * 5, confidence.Length); // 6 predictors x 5 confidence buckets
        // Fields from the end (an architecture such as "Pool(64, 8)" is quoted and holds a comma): bucket, images, disagreements.
        var byPredictor = confidence.Skip(1).Select(l => l.Split(',')).GroupBy(f => string.Join(",", f[..^3])).ToArray();
        Assert.Equal(6, byPredictor.Length);
        Assert.All(byPredictor, predictor => Assert.Equal(200, predictor.Sum(f => long.Parse(f[^2], System.Globalization.CultureInfo.InvariantCulture))));
        Assert.Contains("| base model's confidence | images | L7 FC(16) | L7 Pool(64, 8) | L7 Conv(3, 1) | L8 FC(16) |", markdown);
        Assert.True(new FileInfo(Path.Combine(reportDir, "agreement.png")).Length > 1000);
        Assert.Contains($"\ngati report predictors --model {predictors} --data-dir", markdown);

        var caches = temp.File("caches.zip");
        (exit, output) = CliHost.Invoke("fit-caches", "--predictors-model", predictors, "--data-dir", Data, "--architectures", "conv", "--holdout-rows", "300",
            "--selector-epochs", "2", "--device", "cpu", "--output", caches);
        Assert.True(exit == 0, output);
        Assert.Contains("Reusing 2 trained predictors", output);

        var chosen = temp.File("chosen.zip");
        (exit, output) = CliHost.Invoke("optimize", "--model", caches, "--data-dir", Data, "--holdout-rows", "300", "--agreement-target", "0.5", "--timing-runs", "5",
            "--device", "cpu", "--output", chosen);
        Assert.True(exit == 0, output);
        var plan = File.ReadAllText(chosen + ".plan.md");
        Assert.Contains($"\ngati optimize --model {caches} ", plan);
        // Every fitted cache is also a candidate at the default precision targets' thresholds (from its calibration curve).
        Assert.Matches(@"2 fitted caches, \d+ more candidates re-thresholded for exit precisions 97\.0 %, 98\.0 %, 99\.0 %, 99\.5 %, 99\.8 %, 99\.9 %", output);
        Assert.True(plan.Split('\n').Count(l => l.StartsWith("| 7 | Conv(3, 1) | ", StringComparison.Ordinal)) >= 2, plan);
        var fittedOnly = temp.File("fitted-only.zip");
        (exit, output) = CliHost.Invoke("optimize", "--model", caches, "--data-dir", Data, "--holdout-rows", "300", "--agreement-target", "0.5", "--timing-runs", "5",
            "--precision-targets", "none", "--device", "cpu", "--output", fittedOnly);
        Assert.True(exit == 0, output);
        Assert.Single(File.ReadAllLines(fittedOnly + ".plan.md"), l => l.StartsWith("| 7 | Conv(3, 1) | ", StringComparison.Ordinal));

        // Caches of another architecture, fitted later on the same base model, join the candidates.
        var fcCaches = temp.File("fc-caches.zip");
        Ok(CliHost.Invoke("fit-caches", "--predictors-model", predictors, "--data-dir", Data, "--architectures", "fc:16", "--holdout-rows", "300",
            "--selector-epochs", "2", "--device", "cpu", "--output", fcCaches));
        var mergedChoice = temp.File("merged.zip");
        Ok(CliHost.Invoke("optimize", "--model", caches, "--more-candidates", fcCaches, "--data-dir", Data, "--holdout-rows", "300", "--agreement-target", "0.5",
            "--timing-runs", "5", "--device", "cpu", "--output", mergedChoice));
        var mergedPlan = File.ReadAllText(mergedChoice + ".plan.md");
        Assert.Contains("Measured on 300 held-out rows", mergedPlan);
        foreach (var layer in new[] { 7, 8 })
        foreach (var architecture in new[] { "Conv(3, 1)", "FC(16)" })
            Assert.Contains($"| {layer} | {architecture} |", mergedPlan);
        (exit, output) = CliHost.Invoke("optimize", "--model", caches, "--more-candidates", basePath, "--data-dir", Data, "--holdout-rows", "300",
            "--device", "cpu", "--output", temp.File("refused.zip"));
        Assert.Equal(1, exit);
        Assert.Contains("holds no learned caches", output);
        (exit, output) = CliHost.Invoke("bench", "engine", "--model", chosen, "--data-dir", Data, "--rows", "64", "--batch-sizes", "1,16",
            "--memory-predictions", "200", "--device", "cpu");
        Assert.True(exit == 0, output);
        Assert.Contains("Batch 16: 5 rounds x 4 calls per engine", output);
        foreach (var engine in new[] { "TorchSharp full", "TorchSharp early exit", "ONNX Runtime full", "ONNX Runtime full (one graph, own pool)", "ONNX Runtime early exit (segment calls)", "ONNX Runtime early exit" })
            Assert.Contains($"| {engine} |", output);
        Assert.Contains("Exit decisions, TorchSharp early exit against ONNX Runtime early exit: identical on", output);
        Assert.Contains("ONNX Runtime early exit at batch 1: the same label and exit as at batch 64 on 64 of 64 rows.", output);
        Assert.Contains("Batch 1 by exit layer", output);
        Assert.Contains("live TorchSharp tensors", output);

        // The workload benchmark: static and online caches in turns, a table per stream, the exit breakdown.
        var workload = temp.File("workload.md");
        (exit, output) = CliHost.Invoke("bench", "workload", "--model", chosen, "--data-dir", Data, "--requests", "2400", "--phase-length", "1200",
            "--rate", "2000", "--update-every", "200", "--validation-rows", "50", "--stream", "all", "--output", workload);
        Assert.True(exit == 0, output);
        var report = File.ReadAllText(workload);
        Assert.Contains("in turns of 1000", output);
        Assert.Contains("### Phased stream (2400 requests)", report);
        Assert.Contains("### Uniform stream (2400 requests)", report);
        Assert.Contains("| **whole stream** | all | 2400 |", report);
        Assert.Contains("By exit, static / online mean latency", report);
        Assert.Contains("Garbage collection during each replay's turns", report);
        Assert.Contains("reacting when the upper bound falls below it, or the estimate after the lower bound had shown it kept", report);
        // The drift stream: the second half through the changed camera, judged per window for all three replays.
        Assert.Contains("### Drift stream (2400 requests)", report);
        Assert.Contains("contrast x0.5 about each image's mean, sensor noise sigma 5 % of the pixel range (0-1)", report);
        Assert.Contains("| 2 | shifted camera | 1200 |", report);
        Assert.Contains("Shifted half, agreement with the base model per window of 2000 requests", report);
        Assert.Contains("| online, reactions only |", report);
    }

    [Fact]
    public void ImportedOnnxBase_TrainPredictorsReportFitCachesOptimizeEvaluate_Work()
    {
        // A Gati ResNet exported to ONNX and imported back is an imported base model (no TorchSharp network): every
        // command after the import works on it as on a ResNet trained here.
        using var temp = new TempDirectory();
        var trained = temp.File("trained.zip");
        Ok(CliHost.Invoke("train-base", "--data-dir", Data, "--width", "4", "--epochs", "1", "--train-rows", "600", "--test-rows", "100", "--device", "cpu", "--output", trained));
        var onnx = temp.File("resnet.onnx");
        Ok(CliHost.Invoke("export", "onnx", "--model", trained, "--output", onnx));
        var imported = temp.File("imported.zip");
        var (exit, output) = CliHost.Invoke("import", "onnx", "--model", onnx, "--output", imported);
        Assert.True(exit == 0, output);
        Assert.Contains("8 cut points", output);

        var predictors = temp.File("predictors.zip");
        (exit, output) = CliHost.Invoke("train-predictors", "--base-model", imported, "--data-dir", Data, "--layers", "6-7", "--architectures", "conv,pool:64:8",
            "--train-rows", "500", "--holdout-rows", "300", "--epochs", "1", "--device", "cpu", "--output", predictors);
        Assert.True(exit == 0, output);
        (exit, output) = CliHost.Invoke("train-predictors", "--base-model", imported, "--data-dir", Data, "--layers", "9",
            "--train-rows", "500", "--holdout-rows", "300", "--epochs", "1", "--device", "cpu", "--output", temp.File("refused.zip"));
        Assert.Equal(1, exit);
        Assert.Contains("--layers: 9 is not a cut point of", output);

        var reportDir = temp.File("report");
        (exit, output) = CliHost.Invoke("report", "predictors", "--model", predictors, "--data-dir", Data, "--rows", "200", "--output-dir", reportDir,
            "--latency-runs", "5", "--device", "cpu");
        Assert.True(exit == 0, output);
        Assert.Contains("| layer | Conv(3, 1) | Pool(64, 8) |", File.ReadAllText(Path.Combine(reportDir, "predictors.md")));

        var caches = temp.File("caches.zip");
        (exit, output) = CliHost.Invoke("fit-caches", "--predictors-model", predictors, "--data-dir", Data, "--holdout-rows", "300",
            "--selector-epochs", "2", "--device", "cpu", "--output", caches);
        Assert.True(exit == 0, output);
        Assert.Contains("Reusing 4 trained predictors", output);
        var chosen = temp.File("chosen.zip");
        Ok(CliHost.Invoke("optimize", "--model", caches, "--data-dir", Data, "--holdout-rows", "300", "--agreement-target", "0.5", "--timing-runs", "5",
            "--device", "cpu", "--output", chosen));
        (exit, output) = CliHost.Invoke("evaluate", "--model", chosen, "--data-dir", Data, "--rows", "100", "--device", "cpu");
        Assert.True(exit == 0, output);
        (exit, output) = CliHost.Invoke("evaluate-early-exit", "--model", chosen, "--data-dir", Data, "--rows", "100", "--batch-sizes", "1,4", "--device", "cpu");
        Assert.True(exit == 0, output);
        Assert.Contains("fastest full model at batch 1 of 4 (30 calls each, interleaved in blocks of 10)", output);
        // The workload benchmark serves the imported model's caches too.
        var workload = temp.File("workload.md");
        (exit, output) = CliHost.Invoke("bench", "workload", "--model", chosen, "--data-dir", Data, "--rows", "300", "--stream", "drift", "--requests", "400",
            "--rate", "2000", "--update-every", "100", "--validation-rows", "20", "--output", workload);
        Assert.True(exit == 0, output);
        Assert.Contains("Model: chosen.zip (resnet.onnx (48 nodes", File.ReadAllText(workload));
        Assert.Contains("### Drift stream (400 requests)", File.ReadAllText(workload));
        // The phase ceiling: per phase, a candidate made from training-split rows of the phase's class mix, against the
        // static caches on the phase's requests, and the control candidate from uniform rows.
        var ceiling = temp.File("ceiling.md");
        (exit, output) = CliHost.Invoke("bench", "phase-ceiling", "--model", chosen, "--data-dir", Data, "--rows", "300", "--requests", "400", "--phase-length", "200",
            "--rows-per-phase", "300", "--train-skip", "1000", "--train-pool", "600", "--agreement-target", "0.9", "--output", ceiling);
        Assert.True(exit == 0, output);
        var table = File.ReadAllText(ceiling);
        Assert.Contains("Phased stream: 400 requests over the test split, phases of 200", table);
        Assert.Matches(@"\| 1 \(\d, \d, \d\) \| 200 \| [\d.]+ \| [\d.]+ % \| [\d.]+ \| [\d.]+ % \| [\d.]+ \| [\d.]+ % \|", table);
        Assert.Matches(@"\| 2 \(\d, \d, \d\) \| 200 \|", table);
        Assert.Contains("| **whole stream** | 400 |", table);
        Assert.Contains("- control (uniform rows): layer ", table);
        (exit, output) = CliHost.Invoke("bench", "phase-ceiling", "--model", chosen, "--data-dir", Data, "--stream", "drift", "--rows", "300", "--requests", "400",
            "--rows-per-phase", "300", "--train-skip", "1000", "--train-pool", "600", "--agreement-target", "0.9");
        Assert.True(exit == 0, output);
        Assert.Contains("the second half through a changed camera (contrast x0.5, sensor noise sigma 5 % of the pixel range", output);
        Assert.Contains("| 2 (shifted camera) | 200 |", output);
        (exit, output) = CliHost.Invoke("bench", "phase-ceiling", "--model", chosen, "--data-dir", Data, "--rows", "300", "--requests", "400",
            "--train-skip", "60000");
        Assert.Equal(1, exit);
        Assert.Contains("no rows after the first 60000", output);
        (exit, output) = CliHost.Invoke("bench", "phase-ceiling", "--model", chosen, "--data-dir", Data, "--rows", "300", "--requests", "400",
            "--rows-per-phase", "300", "--train-skip", "1000", "--train-pool", "600");
        Assert.Equal(1, exit);
        Assert.Contains("--rows-per-phase 300 is too few", output);
        Assert.Contains("299 sampled ones to calibrate on", output);
    }

    [Fact]
    public void FitCaches_BothOrNeitherModel_IsAnError()
    {
        var (exit, output) = CliHost.Invoke("fit-caches", "--output", "x.zip", "--device", "cpu");
        Assert.Equal(1, exit);
        Assert.Contains("exactly one of --base-model", output);
    }

    [Fact]
    public void EvaluateEarlyExit_BadBatchSize_IsAnError()
    {
        var (exit, output) = CliHost.Invoke("evaluate-early-exit", "--model", "x.zip", "--batch-sizes", "1,zero", "--device", "cpu");
        Assert.Equal(1, exit);
        Assert.Contains("'zero' is not a positive integer", output);
    }
}
