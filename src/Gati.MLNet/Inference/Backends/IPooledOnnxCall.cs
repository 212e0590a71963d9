namespace Gati.MLNet.Inference.Backends;

/// <summary>A call context of <see cref="OnnxRuntimeBackend"/> that goes back to the backend's pool when the call ends.</summary>
internal interface IPooledOnnxCall : IEarlyExitCall
{
    void Load(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds);

    /// <summary>Frees what the context holds natively (the backend is disposed, or drops it).</summary>
    void Release();
}
