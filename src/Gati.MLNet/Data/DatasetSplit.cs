namespace Gati.MLNet.Data;

/// <summary>Which published split of a dataset to read.</summary>
public enum DatasetSplit
{
    /// <summary>The training split.</summary>
    Train,

    /// <summary>The test split.</summary>
    Test,
}
