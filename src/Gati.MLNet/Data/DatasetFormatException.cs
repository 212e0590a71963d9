namespace Gati.MLNet.Data;

/// <summary>A dataset file is corrupt, truncated or does not match its companion files.</summary>
public sealed class DatasetFormatException : FormatException
{
    /// <summary>Creates the exception; the message is prefixed with the file's path.</summary>
    public DatasetFormatException(string filePath, string problem, Exception? inner = null)
        : base($"{filePath}: {problem}", inner)
    {
        FilePath = filePath;
        Problem = problem;
    }

    /// <summary>The file that is wrong.</summary>
    public string FilePath { get; }

    /// <summary>What is wrong with it.</summary>
    public string Problem { get; }
}
