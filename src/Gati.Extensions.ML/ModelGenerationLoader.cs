using System.Diagnostics;
using Gati.MLNet;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.Extensions.Logging;
using Microsoft.ML;

namespace Gati.Extensions.ML;

/// <summary>
/// Loads a <see cref="ModelEntry{TInput, TOutput}"/>'s file into a new generation (its caches re-thresholded when the
/// pool asks for an exit precision, every ONNX Runtime session opened), and numbers the generations.
/// </summary>
internal sealed class ModelGenerationLoader<TInput, TOutput>(string displayName, string path, EarlyExitPoolOptions options, ILogger logger)
    where TInput : class where TOutput : class, new()
{
    private int _generations;

    /// <summary>The number of the next generation, whether loaded from the file or accepted from the online updater.</summary>
    public int NextNumber() => Interlocked.Increment(ref _generations);

    /// <summary>Loads, retrying at once (short back-off) on errors a file being written can cause.</summary>
    public ModelGeneration<TInput, TOutput> LoadWithRetries()
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return Load();
            }
            catch (Exception ex) when (attempt < options.ReloadAttempts && ex is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                logger.LogWarning("Loading model '{Model}' failed (attempt {Attempt} of {Attempts}): {Message}", displayName, attempt, options.ReloadAttempts, ex.Message);
                Thread.Sleep(TimeSpan.FromMilliseconds(Math.Min(2000, 100 * Math.Pow(2, attempt))));
            }
        }
    }

    public ModelGeneration<TInput, TOutput> Load()
    {
        var clock = Stopwatch.StartNew();
        var context = new MLContext(0);
        // The backend decides where TorchSharp holds the weights (ONNX Runtime runs its own copy: the CPU).
        DeviceOptions.ConfigureContext(context, Gati.MLNet.Inference.Backends.ExecutionBackends.ResolveLoadDevice(options.Backend, options.Device));
        var model = context.Gati().LoadModel(path, out var inputSchema);
        try
        {
            if (options.ExitPrecisionTarget is { } target) model = Rethreshold(model, target);
            // Every ONNX Runtime session is created here, before the generation can be swapped in: a graph ONNX Runtime
            // refuses fails the load, not a request.
            var engine = context.Gati().CreateEarlyExitEngine<TInput, TOutput>(model, options.EngineOptions());
            var number = NextNumber();
            logger.LogInformation("Loaded model '{Model}' generation {Generation} from {Path} in {Milliseconds:F0} ms: caches on layers [{Layers}], {Backend}.",
                displayName, number, path, clock.Elapsed.TotalMilliseconds, string.Join(", ", engine.Caches.Select(c => c.Layer)), engine.BackendDescription);
            if (engine.Caches.Count == 0)
                logger.LogWarning("Model '{Model}' generation {Generation} has no learned caches: every request runs the full base model.", displayName, number);
            return new ModelGeneration<TInput, TOutput>(number, path, model, inputSchema, engine);
        }
        catch
        {
            EarlyExitModel.DisposeComponents(model);
            throw;
        }
    }

    private static ITransformer Rethreshold(ITransformer model, double target)
    {
        if (EarlyExitModel.Find(model) is not { Caches: { } caches } parts) return model;
        var rethresholded = parts.Replacing(caches.WithPrecisionTarget(target));
        caches.Dispose();
        return rethresholded;
    }
}
