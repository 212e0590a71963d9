using System.Text.Json;
using Gati.MLNet.Inference.Backends;

namespace Gati.Cli.Commands;

internal sealed record ImagePredictionSettings(string Model, IReadOnlyList<string> Files, bool Json, long? MaxImagePixels, string Device, EarlyExitEngineOptions Serving);

/// <summary>One image's outcome: a prediction, or the reason there is none.</summary>
internal sealed record ImageOutcome(string File, string? Label, uint? LabelKey, float? Score, int? ExitLayer, bool? ExitedEarly, double? LatencyMs, double? DecodeMs,
    string? Error = null);

/// <summary>
/// <c>gati predict</c>'s work: loads the model's early-exit engine once, then decodes each image with the library's
/// <see cref="ImageDecoder"/> (as the web sample does: same limits, same pixels) and predicts it alone (batch 1). An image
/// that cannot be read or decoded gets its own error line; the others are still predicted, and the exit code is 1.
/// </summary>
internal sealed class ImagePrediction(IAnsiConsole console)
{
    /// <summary>The file extensions --folder picks up (the formats the decoder reads).</summary>
    public static readonly IReadOnlyList<string> Extensions = [".png", ".jpg", ".jpeg"];

    private static readonly JsonSerializerOptions JsonOptions = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The files named, then those of <paramref name="folder"/> (recursively, in ordinal path order).</summary>
    public static IReadOnlyList<string> Files(IReadOnlyList<string> files, string? folder)
    {
        var all = files.ToList();
        if (folder is null) return all;
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"--folder: folder '{folder}' does not exist.");
        var found = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Where(f => Extensions.Contains(Path.GetExtension(f), StringComparer.OrdinalIgnoreCase))
            .Order(StringComparer.Ordinal)
            .ToArray();
        if (found.Length == 0) throw new ArgumentException($"--folder: '{folder}' holds no {string.Join(", ", Extensions)} files.");
        all.AddRange(found);
        return all;
    }

    public int Run(ImagePredictionSettings settings, CancellationToken cancellation = default)
    {
        // Under ONNX Runtime the TorchSharp networks only provide the weights: they stay on the CPU.
        var context = DeviceContext.Create(ExecutionBackends.ResolveLoadDevice(settings.Serving.Backend, settings.Device));
        var model = context.Gati().LoadModel(settings.Model, out _);
        try
        {
            using var engine = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(model, settings.Serving);
            var limits = (settings.MaxImagePixels is { } max ? new ImageDecodingLimits { MaxPixels = max } : ImageDecodingLimits.ForInput(engine.InputShape))
                with { MaxPixelsSetting = "--max-image-pixels" };
            if (!settings.Json)
            {
                var caches = engine.Caches.Count == 0 ? "no caches (the full model answers)" : $"caches on layers {string.Join(", ", engine.Caches.Select(c => c.Layer))}";
                console.MarkupLineInterpolated($"{settings.Model}: input {engine.InputShape}, {engine.ClassNames.Count} classes, {caches}; {engine.BackendDescription}.");
            }
            var outcomes = new List<ImageOutcome>(settings.Files.Count);
            foreach (var file in settings.Files)
            {
                cancellation.ThrowIfCancellationRequested();
                var outcome = Predict(engine, file, limits);
                outcomes.Add(outcome);
                Write(outcome, settings.Json);
            }
            if (!settings.Json) Summarise(outcomes);
            return outcomes.Any(o => o.Error is not null) ? CommandErrors.Failure : 0;
        }
        finally
        {
            LoadedModel.Dispose(model);
        }
    }

    /// <summary>Reads, decodes and predicts one file; reading and decoding errors become the outcome's error.</summary>
    internal static ImageOutcome Predict(EarlyExitPredictionEngine<ImageInput, EarlyExitPrediction> engine, string file, ImageDecodingLimits limits)
    {
        try
        {
            var bytes = File.ReadAllBytes(file);
            var started = Stopwatch.GetTimestamp();
            var image = ImageDecoder.Decode(bytes, engine.InputShape, engine.InputNormalization, limits);
            var decodeMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            var prediction = engine.Predict(new ImageInput { Image = image });
            return new ImageOutcome(file, prediction.PredictedClass, prediction.PredictedLabel, prediction.Score[(int)prediction.PredictedLabel - 1],
                prediction.ExitLayer, prediction.ExitLayer > 0, prediction.LatencyMs, decodeMs);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException or ArgumentException)
        {
            return new ImageOutcome(file, null, null, null, null, null, null, null, ex is ArgumentException argument ? CommandErrors.WithoutParameter(argument) : ex.Message);
        }
    }

    private void Write(ImageOutcome outcome, bool json)
    {
        if (json)
        {
            // Straight to the output, not through Spectre: a JSON line must never be wrapped.
            console.Profile.Out.Writer.WriteLine(JsonSerializer.Serialize(outcome, JsonOptions));
            return;
        }
        if (outcome.Error is { } error)
        {
            console.MarkupLineInterpolated($"{outcome.File}: [red]error:[/] {error}");
            return;
        }
        var exit = outcome.ExitLayer > 0 ? $"exit layer {outcome.ExitLayer}" : "exit layer 0 (full model)";
        console.MarkupLineInterpolated(CultureInfo.InvariantCulture,
            $"{outcome.File}: [bold]{outcome.Label}[/] ({outcome.Score:P1}), {exit}, {outcome.LatencyMs:F2} ms (decoding {outcome.DecodeMs:F2} ms)");
    }

    private void Summarise(List<ImageOutcome> outcomes)
    {
        var predicted = outcomes.Where(o => o.Error is null).ToArray();
        var failed = outcomes.Count - predicted.Length;
        var latency = predicted.Length == 0 ? "" : string.Create(CultureInfo.InvariantCulture, $"; mean latency {predicted.Average(o => o.LatencyMs!.Value):F2} ms");
        var failures = failed > 0 ? $", {failed} failed" : "";
        console.MarkupLineInterpolated(CultureInfo.InvariantCulture,
            $"{outcomes.Count} images: {predicted.Length} predicted ({predicted.Count(o => o.ExitedEarly == true)} exited early){latency}{failures}.");
    }
}
