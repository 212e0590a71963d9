using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Gati.MLNet.Transforms;

/// <summary>
/// Common plumbing of Gati.MLNet transformers: lazy batched <see cref="Transform"/>, a row-to-row mapper for
/// ML.NET's PredictionEngine, and ML.NET model saving. Not meant to be derived from outside this library.
/// </summary>
public abstract class GatiTransformerBase : ITransformer, IDisposable
{
    private bool _disposed;

    private protected GatiTransformerBase(IHostEnvironment environment, string registrationName)
    {
        ArgumentNullException.ThrowIfNull(environment);
        MLNetVersion.EnsureSupported(); // models loaded with mlContext.Model.Load come here first
        Host = environment.Register(registrationName);
    }

    private protected IHost Host { get; }

    /// <summary>Always true: every Gati transformer maps rows one to one.</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The schema <see cref="Transform"/> would produce for <paramref name="inputSchema"/>.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return MakeMapper(inputSchema).OutputSchema;
    }

    /// <summary>Appends this transformer's columns to <paramref name="input"/>, lazily, computed in batches.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ThrowIfDisposed();
        return new BatchMappedDataView(input, MakeMapper(input.Schema), this);
    }

    /// <summary>A row-at-a-time mapper (what ML.NET's PredictionEngine uses).</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ThrowIfDisposed();
        return new BatchRowToRowMapper(MakeMapper(inputSchema));
    }

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ThrowIfDisposed();
        ctx.CheckAtModel();
        ctx.SetVersionInfo(ModelVersion);
        SaveModel(ctx);
    }

    /// <summary>Releases native (TorchSharp) memory held by this transformer.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        DisposeCore();
        GC.SuppressFinalize(this);
    }

    private protected abstract BatchMapper MakeMapper(DataViewSchema inputSchema);

    /// <summary>The model stream's signature and versions: written by every save, checked by the transformer's loader.</summary>
    private protected abstract VersionInfo ModelVersion { get; }

    /// <summary>
    /// The model stream header of a Gati transformer at format <paramref name="version"/> (0x00010003 = 1.3). Each new
    /// version has added fields, so only readers of that version or later can read it; every reader still reads its
    /// format back to 1.1.
    /// </summary>
    private protected static VersionInfo ModelStreamVersion(string modelSignature, uint version, string loaderSignature) => new(
        modelSignature: modelSignature,
        verWrittenCur: version,
        verReadableCur: version,
        verWeCanReadBack: 0x00010001,
        loaderSignature: loaderSignature,
        loaderAssemblyName: typeof(GatiTransformerBase).Assembly.FullName);

    /// <summary>Writes the transformer's fields (the header with <see cref="ModelVersion"/> is already set).</summary>
    private protected abstract void SaveModel(ModelSaveContext ctx);

    private protected virtual void DisposeCore()
    {
    }

    private protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
