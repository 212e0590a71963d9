namespace Gati.MLNet;

/// <summary>Default column names used across Gati.MLNet, matching ML.NET's conventions.</summary>
public static class DefaultColumnNames
{
    /// <summary>Normalised image pixels, Vector&lt;Single, C, H, W&gt;.</summary>
    public const string Image = "Image";

    /// <summary>Ground-truth class, Key&lt;UInt32&gt;.</summary>
    public const string Label = "Label";

    /// <summary>Class probabilities, Vector&lt;Single, k&gt;.</summary>
    public const string Score = "Score";

    /// <summary>Predicted class, Key&lt;UInt32, k&gt;.</summary>
    public const string PredictedLabel = "PredictedLabel";
}
