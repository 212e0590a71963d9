namespace Gati.Cli.Commands;

/// <summary><c>gati export onnx</c>: the base model as one standard ONNX graph, and the early-exit segments.</summary>
internal static class ExportCommand
{
    public static Command Create() =>
        CommandActions.Group("export", "Export a model to another format.",
            CreateOnnx());

    private static Command CreateOnnx()
    {
        var model = new Option<string>("--model", "-m") { Description = "A Gati model zip (base model, with or without learned caches).", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "The .onnx file to write: the base model as one graph (Image -> Logits, Score).", Required = true };
        var segmentsDir = new Option<string?>("--segments-dir")
        {
            Description = "Also write the early-exit segment graphs (one per cache, plus the rest of the network) as .onnx files to this folder, for inspection.",
        };
        var updateModel = new Option<bool>("--update-model")
        {
            Description = "Re-save a model zip of an older format in the current one (1.3): the base model's and each cache's ONNX graph inside, so that serving builds its segments from them instead of exporting the TorchSharp networks at load.",
        };
        var dataset = new DatasetArguments();
        var verify = new Option<bool>("--verify")
        {
            Description = "After writing, score the dataset's test split with ML.NET's ApplyOnnxModel on the .onnx file and with the base model, and compare the predicted labels (exit code 1 if any differ).",
        };
        var verifyRows = new Option<long?>("--verify-rows") { Description = "Verify on the first N test rows only (default: all)." }.AtLeast(1L);
        var command = new Command("onnx", "Export the base model as one standard ONNX graph (opset 17) that ML.NET's ApplyOnnxModel, ONNX Runtime and other tools read; optionally the early-exit segment graphs.");
        command.AddOptions(model, output, segmentsDir, updateModel, verify, verifyRows);
        dataset.AddTo(command);
        command.SetRun((result, _) =>
            new ExportOnnxRunner(AnsiConsole.Console).Run(result.GetValue(model)!, result.GetValue(output)!, result.GetValue(segmentsDir), result.GetValue(updateModel),
                result.GetValue(verify) ? dataset.Read(result) : null, result.GetValue(verifyRows)));
        return command;
    }
}

/// <summary>Runs <c>gati export onnx</c>.</summary>
internal sealed class ExportOnnxRunner(IAnsiConsole console)
{
    public int Run(string modelPath, string output, string? segmentsDir, bool updateModel, DatasetSpec? verifyOn = null, long? verifyRows = null)
    {
        // The networks are only read: keep them on the CPU whatever the machine has.
        var context = DeviceContext.Create("cpu");
        var model = context.Gati().LoadModel(modelPath, out var schema);
        try
        {
            var parts = LoadedModel.Parts(model, modelPath);
            var baseModel = parts.BaseModel;
            context.Gati().ExportOnnx(model, output);
            console.MarkupLineInterpolated(
                $"Wrote [bold]{output}[/] ({new FileInfo(output).Length / 1024.0:F0} KB): {baseModel.Description}, input Image [[N, {baseModel.InputShape.Channels}, {baseModel.InputShape.Height}, {baseModel.InputShape.Width}]], outputs Logits and Score [[N, {baseModel.ClassCount}]], {baseModel.CutPoints.Count} cut points recorded.");

            var verified = verifyOn is null || Verify(context, model, output, verifyOn, verifyRows);
            var caches = LoadedModel.Components(model).OfType<LearnedCachesTransformer>().LastOrDefault();
            if (caches is null || !caches.OneCachePerLayer)
            {
                if (segmentsDir is not null || updateModel)
                    throw new InvalidOperationException($"{modelPath} holds no servable learned caches (one per layer; see gati optimize): there are no early-exit segments to export.");
                return verified ? 0 : 1;
            }
            var segments = caches.OnnxSegments();
            if (segmentsDir is not null)
            {
                Directory.CreateDirectory(segmentsDir);
                var index = new StringBuilder("| file | layers | outputs |\n|---|---|---|\n");
                for (var i = 0; i < segments.Count; i++)
                {
                    var s = segments[i];
                    var name = string.Create(CultureInfo.InvariantCulture, $"segment-{i}.onnx");
                    AtomicFile.WriteAllBytes(Path.Combine(segmentsDir, name), s.Model);
                    var layers = s.FirstLayer == 0 ? $"input, 1..{s.LastLayer}" : s.FirstLayer > s.LastLayer ? "none" : $"{s.FirstLayer}..{s.LastLayer}";
                    index.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {layers}{(s.IsFinal ? " + head" : $" + cache of layer {s.LastLayer}")} | {(s.IsFinal ? "Probabilities" : "Activation, Probabilities, Hit")} |");
                }
                AtomicFile.WriteAllBytes(Path.Combine(segmentsDir, "early-exit-single.onnx"), caches.OnnxSingleGraph());
                index.AppendLine("| early-exit-single.onnx | all, the exits as If nodes (batch 1) | Probabilities, Exit |");
                AtomicFile.WriteAllText(Path.Combine(segmentsDir, "segments.md"), index.ToString());
                console.MarkupLineInterpolated($"Wrote {segments.Count} segment graphs, the single early-exit graph and segments.md to [bold]{segmentsDir}[/].");
            }
            if (updateModel)
            {
                context.Gati().SaveModel(model, schema, modelPath);
                console.MarkupLineInterpolated($"Re-saved [bold]{modelPath}[/] with its base model's and caches' ONNX graphs (format 1.3), which its {segments.Count} segments are built from.");
            }
            return verified ? 0 : 1;
        }
        finally
        {
            LoadedModel.Dispose(model);
        }
    }

    /// <summary>The exported graph through ML.NET's ApplyOnnxModel against the base model, label by label.</summary>
    private bool Verify(MLContext context, ITransformer model, string onnxPath, DatasetSpec dataset, long? rows)
    {
        var parts = LoadedModel.Parts(model, "the model");
        var test = parts.Inputs(dataset.Load(context, Gati.MLNet.Data.DatasetSplit.Test, rows));
        // The exported graph reads "Image"; an imported base model may read another column (e.g. Pixels).
        if (parts.ImageColumnName != "Image") test = context.Transforms.CopyColumns("Image", parts.ImageColumnName).Fit(test).Transform(test);
        var scored = parts.BaseTransformer.Transform(test);
        var (scoreColumn, labelColumn) = parts.BaseTransformer switch
        {
            ResNetTransformer resnet => (resnet.ScoreColumnName, resnet.PredictedLabelColumnName),
            ImportedModelTransformer imported => (imported.ScoreColumnName, imported.PredictedLabelColumnName),
            _ => throw new InvalidOperationException("Not a base model."),
        };
        var expected = scored.GetColumn<uint>(labelColumn).ToArray();
        var onnx = context.Transforms.ApplyOnnxModel(outputColumnNames: ["Score"], inputColumnNames: ["Image"], modelFile: onnxPath).Fit(test);
        try
        {
            var expectedScores = scored.GetColumn<float[]>(scoreColumn).ToArray();
            var scores = onnx.Transform(test).GetColumn<float[]>("Score").ToArray();
            var differ = 0;
            var worst = 0.0;
            for (var i = 0; i < scores.Length; i++)
            {
                var label = (uint)Array.IndexOf(scores[i], scores[i].Max()) + 1;
                if (label != expected[i]) differ++;
                for (var k = 0; k < scores[i].Length; k++) worst = Math.Max(worst, Math.Abs(scores[i][k] - expectedScores[i][k]));
            }
            if (differ == 0)
                console.MarkupLineInterpolated(
                    $"Verified with ML.NET ApplyOnnxModel on {scores.Length} {dataset.Name} test images: predicted labels [green]identical[/] to the base model's; largest score difference {worst:E2}.");
            else
                console.MarkupLineInterpolated(
                    $"Verified with ML.NET ApplyOnnxModel on {scores.Length} {dataset.Name} test images: [red]{differ} predicted labels differ[/] from the base model's; largest score difference {worst:E2}.");
            return differ == 0 && scores.Length == expected.Length;
        }
        finally
        {
            (onnx as IDisposable)?.Dispose();
        }
    }
}
