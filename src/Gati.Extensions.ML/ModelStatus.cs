namespace Gati.Extensions.ML;

/// <summary>The state of a named model in the pool.</summary>
/// <param name="Name">Model name ("" for the default model).</param>
/// <param name="Path">The model file.</param>
/// <param name="Generation">How many times the model has been loaded (1 after the first load).</param>
/// <param name="LoadedAt">When the current generation was loaded.</param>
/// <param name="CacheLayers">Layers of the caches the engine uses.</param>
/// <param name="Device">Where it runs.</param>
/// <param name="FailedReloads">Reloads that failed (the previous generation kept serving).</param>
/// <param name="LastError">The last reload error, if any.</param>
/// <param name="InputShape">[C, H, W] of the images the model reads.</param>
/// <param name="InputNormalization">Normalisation of the training images (to prepare raw pixels), when the model recorded it.</param>
/// <param name="ClassNames">Class names in label order.</param>
/// <param name="Backend">The runtime in words (e.g. "ONNX Runtime 1.31.1 (cpu, shared pool of 1 thread, one graph at batch 1 on the caller's thread)").</param>
/// <param name="Source">Where the current generation came from: "file", or "online update N".</param>
/// <param name="Online">Live agreement and updates when the pool runs continuously updated caches (<see cref="EarlyExitPoolOptions.Online"/>); else null.</param>
/// <param name="Warnings">Conditions that need attention but do not stop serving (see <see cref="ModelHealth.Warnings"/>); null reads as none.</param>
public sealed record ModelStatus(string Name, string Path, int Generation, DateTimeOffset LoadedAt, IReadOnlyList<int> CacheLayers, string Device,
    int FailedReloads, string? LastError, Gati.MLNet.Data.TensorShape InputShape, Gati.MLNet.Data.ChannelNormalization? InputNormalization,
    IReadOnlyList<string> ClassNames, string Backend = "", string Source = "file", OnlineCacheStatus? Online = null, IReadOnlyList<string>? Warnings = null);
