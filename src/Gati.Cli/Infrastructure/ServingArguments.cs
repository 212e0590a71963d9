namespace Gati.Cli.Infrastructure;

/// <summary>--backend, --ort-threads and --ort-spinning, shared by every command that serves a model through the early-exit engine.</summary>
internal sealed class ServingArguments
{
    public ServingArguments(string defaultBackend = "onnxruntime", bool allowBoth = false)
    {
        Backend = new Option<string>("--backend")
        {
            Description = "Runtime of the early-exit engine: onnxruntime (ONNX Runtime, the default) or torchsharp" + (allowBoth ? ", or both (measured side by side)." : "."),
            DefaultValueFactory = _ => defaultBackend,
        };
        string[] allowed = allowBoth ? ["onnxruntime", "torchsharp", "both"] : ["onnxruntime", "torchsharp"];
        Backend.Require(allowed.Contains, "must be " + string.Join(" or ", allowed));
    }

    public Option<string> Backend { get; }

    public Option<int?> OrtThreads { get; } = new Option<int?>("--ort-threads")
    {
        Description = "Threads of ONNX Runtime's calls with several inputs, in a pool shared by every session (default: as the measured batch-1 choice, shared when it is one thread).",
    }.AtLeast(1);

    public Option<int?> OrtSingleGraphThreads { get; } = new Option<int?>("--ort-single-graph-threads")
    {
        Description = "Threads of ONNX Runtime's batch-1 calls, served by one graph with the exits as If nodes (default: chosen by measuring the model on this machine, one thread or every core).",
    }.AtLeast(1);

    public Option<bool> OrtSpinning { get; } = new("--ort-spinning")
    {
        Description = "Let ONNX Runtime's pool threads spin between calls (lower latency for back-to-back calls, busy cores in between).",
    };

    /// <summary>Adds the options; without <paramref name="withBackend"/>, only ONNX Runtime's (commands that serve on it alone).</summary>
    public void AddTo(Command command, bool withBackend = true)
    {
        if (withBackend) command.Options.Add(Backend);
        command.Options.Add(OrtThreads);
        command.Options.Add(OrtSpinning);
        command.Options.Add(OrtSingleGraphThreads);
    }

    /// <summary>The engine options of each backend asked for (two for "both": TorchSharp first).</summary>
    public IReadOnlyList<EarlyExitEngineOptions> Read(ParseResult result, string device)
    {
        var backends = result.GetValue(Backend) switch
        {
            "torchsharp" => new[] { ExecutionBackend.TorchSharp },
            "both" => [ExecutionBackend.TorchSharp, ExecutionBackend.OnnxRuntime],
            _ => [ExecutionBackend.OnnxRuntime],
        };
        return backends.Select(b => For(b, result, device)).ToArray();
    }

    /// <summary>The engine options on ONNX Runtime, for commands added without the backend choice.</summary>
    public EarlyExitEngineOptions ReadOnnxRuntime(ParseResult result, string device) => For(ExecutionBackend.OnnxRuntime, result, device);

    private EarlyExitEngineOptions For(ExecutionBackend backend, ParseResult result, string device) => new()
    {
        Backend = backend,
        Device = device,
        IntraOpThreads = result.GetValue(OrtThreads),
        AllowSpinning = result.GetValue(OrtSpinning),
        SingleGraphThreads = result.GetValue(OrtSingleGraphThreads),
    };
}
