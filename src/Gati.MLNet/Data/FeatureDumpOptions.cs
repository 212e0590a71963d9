namespace Gati.MLNet.Data;

/// <summary>Settings of <see cref="Training.FeatureDump.Write"/>.</summary>
public sealed class FeatureDumpOptions
{
    /// <summary>Rows per chunk file (also the unit of resuming).</summary>
    public int ChunkRows { get; set; } = 4096;

    /// <summary>Store features as float16 (half the disk; ~3 significant digits). Logits stay float32.</summary>
    public bool Float16 { get; set; }

    /// <summary>What is dumped, e.g. "Fashion-MNIST train"; must match when resuming.</summary>
    public string Source { get; set; } = "unnamed";

    /// <summary>Ground-truth label column to keep (Key&lt;UInt32&gt;); absent labels are stored as 0 (missing).</summary>
    public string LabelColumnName { get; set; } = DefaultColumnNames.Label;

    /// <summary>Receives (rows written, total rows) after every chunk.</summary>
    public IProgress<(long Rows, long Total)>? Progress { get; set; }

    /// <summary>Stops between batches; finished chunks stay and the next call resumes after them.</summary>
    public CancellationToken CancellationToken { get; set; }
}
