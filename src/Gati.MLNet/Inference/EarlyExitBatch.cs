namespace Gati.MLNet.Inference;

/// <summary>Raw results of one engine call: per row, the class, its probabilities and the exit layer.</summary>
internal sealed class EarlyExitBatch
{
    public EarlyExitBatch(int rows, int classes)
    {
        PredictedClass = new int[rows];
        Probabilities = new float[rows * classes];
        ExitLayer = new int[rows];
    }

    /// <summary>0-based predicted class per row.</summary>
    public int[] PredictedClass { get; }

    /// <summary>Probabilities, rows x classes.</summary>
    public float[] Probabilities { get; }

    /// <summary>Exit layer per row (0 = full model).</summary>
    public int[] ExitLayer { get; }

    public double ElapsedMs { get; set; }
}
