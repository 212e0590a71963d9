using Gati.MLNet.Import;
using Gati.MLNet.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace Gati.Cli.Commands;

/// <summary><c>gati import onnx</c> and <c>gati import mlnet</c>: make an existing network a Gati base model.</summary>
internal static class ImportCommand
{
    public static Command Create() =>
        CommandActions.Group("import", "Make an existing network a Gati base model, so that learned caches can be fitted on it (gati fit-caches).",
            CreateOnnx(), CreateMLNet());

    private static Option<string?> CutPoints() => new("--cut-points")
    {
        Description = "Cut points by the names of values in the network, comma-separated (default: found automatically; for a ResNet, each residual block's output).",
    };

    private static Command CreateOnnx()
    {
        var model = new Option<string>("--model", "-m") { Description = "The .onnx image classifier.", Required = true };
        var preprocess = new Option<string?>("--preprocess") { Description = "An .onnx graph run before it (its output is the network's input), e.g. ML.NET's ResNetPreprocess.onnx." };
        var outputName = new Option<string?>("--output-name") { Description = "The output holding the class scores (default: the only output, or Logits of a Gati export)." };
        var scores = new Option<string>("--scores") { Description = "What that output holds: logits or probabilities.", DefaultValueFactory = _ => "logits" };
        scores.AcceptOnlyFromAmong("logits", "probabilities");
        var classNames = new Option<string?>("--class-names") { Description = "Class names in score order, comma-separated (default: those a Gati export recorded, else 0..k-1)." };
        var imageColumn = new Option<string>("--image-column") { Description = "The column the model reads.", DefaultValueFactory = _ => DefaultColumnNames.Image };
        var cutPoints = CutPoints();
        var output = new Option<string>("--output", "-o") { Description = "Model zip to write (the imported base model).", Required = true };
        var command = new Command("onnx", "Import an ONNX image classifier: its graph normalised to Gati's opset (batch norms folded, batch dimension symbolic) and cut into cut points.");
        command.AddOptions(model, preprocess, outputName, scores, classNames, imageColumn, cutPoints, output);
        command.SetRun((result, _) =>
        {
            var context = new MLContext(0);
            var options = new OnnxImportOptions
            {
                PreprocessingModelPath = result.GetValue(preprocess),
                OutputName = result.GetValue(outputName),
                Scores = result.GetValue(scores) == "probabilities" ? OnnxScores.Probabilities : OnnxScores.Logits,
                ClassNames = result.GetValue(classNames)?.Split(',', StringSplitOptions.TrimEntries),
                ImageColumnName = result.GetValue(imageColumn)!,
                CutPoints = Names(result.GetValue(cutPoints)),
            };
            using var imported = context.Gati().ImportOnnxModel(result.GetValue(model)!, options);
            var schema = new DataViewSchema.Builder();
            schema.AddColumn(options.ImageColumnName, new VectorDataViewType(NumberDataViewType.Single, imported.BaseModel.InputShape.Channels,
                imported.BaseModel.InputShape.Height, imported.BaseModel.InputShape.Width));
            context.Gati().SaveModel(imported, schema.ToSchema(), result.GetValue(output)!);
            Report(AnsiConsole.Console, imported.BaseModel, result.GetValue(output)!);
            return 0;
        });
        return command;
    }

    private static Command CreateMLNet()
    {
        var pipeline = new Option<string>("--pipeline", "-p")
        {
            Description = "A fitted ML.NET pipeline saved with mlContext.Model.Save: image transforms, an ONNX featurizer (DnnFeaturizeImage or ApplyOnnxModel), a linear multiclass trainer.",
            Required = true,
        };
        var cutPoints = CutPoints();
        var dataset = new DatasetArguments();
        var verifyRows = new Option<long?>("--verify-rows") { Description = "Compare the import with the pipeline on the first N rows of the dataset's test split (default: all; 0 skips)." }.AtLeast(0L);
        var output = new Option<string>("--output", "-o") { Description = "Model zip to write: the pipeline's image transforms and the imported base model.", Required = true };
        var command = new Command("mlnet",
            "Import a fitted ML.NET image pipeline (featurizer + linear trainer, as in ML.NET's image classification tutorial): one ONNX graph from the pixels to the trainer's scores, " +
            $"cut into cut points. Supported trainers: {MLNetPipelineImport.SupportedTrainers}.");
        command.AddOptions(pipeline, cutPoints, verifyRows, output);
        dataset.AddTo(command);
        command.SetRun((result, _) =>
            new ImportMLNetRunner(AnsiConsole.Console).Run(result.GetValue(pipeline)!, Names(result.GetValue(cutPoints)), dataset.Read(result),
                result.GetValue(verifyRows), result.GetValue(output)!));
        return command;
    }

    private static string[]? Names(string? list) => list?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);

    internal static void Report(IAnsiConsole console, Gati.MLNet.Models.BaseModel model, string output)
    {
        var table = new Table().Title($"{model.Description}: input {model.InputShape}, {model.ClassCount} classes")
            .AddColumn("cut point").AddColumn("value").AddColumn("shape").AddColumn(new TableColumn("values").RightAligned());
        foreach (var cut in model.CutPoints)
            table.AddRow(cut.Number.ToString(CultureInfo.InvariantCulture), Markup.Escape(cut.Name), cut.Shape.ToString(), cut.Shape.Size.ToString("N0", CultureInfo.InvariantCulture));
        console.Write(table);
        console.MarkupLineInterpolated($"Saved the base model to [bold]{output}[/] ({new FileInfo(output).Length / 1e6:F1} MB). Next: gati fit-caches --base-model {output}.");
    }
}

/// <summary>Runs <c>gati import mlnet</c>.</summary>
internal sealed class ImportMLNetRunner(IAnsiConsole console)
{
    public int Run(string pipelinePath, IReadOnlyList<string>? cutPoints, DatasetSpec dataset, long? verifyRows, string output)
    {
        var clock = Stopwatch.StartNew();
        var context = new MLContext(0);
        if (!File.Exists(pipelinePath)) throw new FileNotFoundException($"ML.NET pipeline not found: {pipelinePath}", pipelinePath);
        var pipeline = context.Model.Load(pipelinePath, out var schema);
        var imported = context.Gati().ImportBaseModel(pipeline, schema, new BaseModelImportOptions { CutPoints = cutPoints });
        try
        {
            context.Gati().SaveModel(imported, schema, output);
            var parts = LoadedModel.Parts(imported, output);
            ImportCommand.Report(console, parts.BaseModel, output);
            if (verifyRows is 0) return 0;
            var test = dataset.Load(context, DatasetSplit.Test, verifyRows);
            return Verify(context, pipeline, imported, parts, test) ? 0 : 1;
        }
        finally
        {
            LoadedModel.Dispose(imported);
            console.MarkupLineInterpolated($"[grey]{clock.Elapsed.TotalSeconds:F0} s[/]");
        }
    }

    /// <summary>
    /// The pipeline and the import on the same rows: predicted labels (all must be equal) and scores; then the imported
    /// graph cut point by cut point against the whole graph (within 1e-4).
    /// </summary>
    private bool Verify(MLContext context, ITransformer pipeline, ITransformer imported, EarlyExitModel parts, IDataView test)
    {
        var expected = pipeline.Transform(test);
        var actual = imported.Transform(test);
        // One pass through the pipeline (its featurizer is the expensive part): scores, predicted and true labels together.
        var expectedScores = new List<float[]>();
        var correct = 0;
        static bool IsKey(DataViewSchema.Column? column) => column?.Type is KeyDataViewType { RawType: var raw } && raw == typeof(uint);
        var keyed = IsKey(expected.Schema.GetColumnOrNull("PredictedLabel")) && IsKey(expected.Schema.GetColumnOrNull("Label"));
        var columns = keyed ? new[] { expected.Schema["Score"], expected.Schema["PredictedLabel"], expected.Schema["Label"] } : [expected.Schema["Score"]];
        using (var cursor = expected.GetRowCursor(columns))
        {
            var score = cursor.GetGetter<VBuffer<float>>(expected.Schema["Score"]);
            var predicted = keyed ? cursor.GetGetter<uint>(expected.Schema["PredictedLabel"]) : null;
            var label = keyed ? cursor.GetGetter<uint>(expected.Schema["Label"]) : null;
            VBuffer<float> buffer = default;
            uint p = 0, l = 0;
            while (cursor.MoveNext())
            {
                score(ref buffer);
                expectedScores.Add(buffer.DenseValues().ToArray());
                if (!keyed) continue;
                predicted!(ref p);
                label!(ref l);
                if (p == l) correct++;
            }
        }
        var actualScores = actual.GetColumn<float[]>("Score").ToArray();
        var differ = 0;
        var worst = 0.0;
        for (var i = 0; i < expectedScores.Count; i++)
        {
            if (Array.IndexOf(expectedScores[i], expectedScores[i].Max()) != Array.IndexOf(actualScores[i], actualScores[i].Max())) differ++;
            for (var k = 0; k < expectedScores[i].Length; k++) worst = Math.Max(worst, Math.Abs(expectedScores[i][k] - actualScores[i][k]));
        }
        var accuracy = keyed ? string.Create(CultureInfo.InvariantCulture, $"; the pipeline's accuracy {correct / (double)Math.Max(1, expectedScores.Count):P2}") : "";
        console.MarkupLine(string.Create(CultureInfo.InvariantCulture,
            $"The ML.NET pipeline and the import on {expectedScores.Count} test images: predicted labels {(differ == 0 ? "[green]identical[/]" : $"[red]different on {differ}[/]")}, largest score difference {worst:E2}{Markup.Escape(accuracy)}."));

        // Segments chained cut point by cut point against the whole graph, on a few rows.
        var graph = parts.BaseModel.Graph;
        var rows = parts.Inputs(context.Data.TakeRows(test, 16)).GetColumn<float[]>(parts.ImageColumnName).SelectMany(r => r).ToArray();
        var x = rows;
        for (var part = 0; part <= graph.Cuts.Count; part++)
            x = Run(Part(graph, part), x, graph.DimsAt(part));
        var whole = Run(graph.FullModel(new Dictionary<string, string>()), rows, graph.DimsAt(0), "Image", "Logits");
        var chained = whole.Zip(x).Max(p => Math.Abs(p.First - p.Second));
        console.MarkupLineInterpolated($"Its {graph.Cuts.Count + 1} parts chained cut point by cut point against the whole graph: largest logit difference {chained:E2} (tolerance 1e-4).");
        return differ == 0 && chained <= 1e-4;
    }

    private static byte[] Part(BaseGraph graph, int part)
    {
        var builder = new OnnxGraphBuilder("part");
        var dims = graph.DimsAt(part);
        var input = builder.Input("In", Onnx.TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
        var output = builder.Rename(graph.Emit(builder, part, part + 1, input, "b/"), "Out");
        builder.Output(output, Onnx.TensorProto.Types.DataType.Float, part == graph.Cuts.Count ? [null, graph.ClassCount] : [null, .. graph.DimsAt(part + 1).Select(d => (long?)d)]);
        return builder.ToBytes();
    }

    private static float[] Run(byte[] model, float[] inputs, long[] dims, string input = "In", string output = "Out")
    {
        using var session = new InferenceSession(model);
        var size = dims.Aggregate(1L, (a, b) => a * b);
        using var value = OrtValue.CreateTensorValueFromMemory(inputs, [inputs.Length / size, .. dims]);
        using var outputs = session.Run(new RunOptions(), [input], [value], [output]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }
}

/// <summary><c>gati images</c>: a dataset's images as PNG files in class folders (train/ and test/).</summary>
internal static class ImagesCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--output", "-o") { Description = "Folder to write train/ and test/ into, each with one folder per class.", Required = true };
        var dataDir = new Option<string?>("--data-dir") { Description = "Folder holding Fashion-MNIST's IDX files (default: /usr/share/datasets/fashion-mnist)." };
        var trainRows = new Option<long?>("--train-rows") { Description = "Images of the training split to write (default: all 60,000)." }.AtLeast(1L);
        var testRows = new Option<long?>("--test-rows") { Description = "Images of the test split to write (default: all 10,000)." }.AtLeast(1L);
        var command = new Command("images", "Write Fashion-MNIST's product photos as PNG files in class folders (the input of ML.NET's image tutorials); resumable: files already written are kept.");
        command.AddOptions(output, dataDir, trainRows, testRows);
        command.SetRun((result, cancellation) =>
        {
            var clock = Stopwatch.StartNew();
            var context = new MLContext(0);
            var root = result.GetValue(output)!;
            var written = context.Data.ExportFashionMnistImages(Path.Combine(root, "train"), DatasetSplit.Train, result.GetValue(trainRows), dataDirectory: result.GetValue(dataDir));
            written += context.Data.ExportFashionMnistImages(Path.Combine(root, "test"), DatasetSplit.Test, result.GetValue(testRows), dataDirectory: result.GetValue(dataDir));
            AnsiConsole.MarkupLineInterpolated($"Wrote {written} PNG files under [bold]{root}[/] (train/, test/) in {clock.Elapsed.TotalSeconds:F0} s.");
            return 0;
        });
        return command;
    }
}
