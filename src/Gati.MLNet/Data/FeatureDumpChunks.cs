using System.Globalization;
using System.Text;

namespace Gati.MLNet.Data;

/// <summary>
/// The chunk files of a feature dump (docs/model-format.md): the one definition that the writer
/// (<see cref="Training.FeatureDump"/>) and the reader (<see cref="FeatureDumpView"/>) share.
/// </summary>
internal static class FeatureDumpChunks
{
    /// <summary>First 8 bytes of every chunk file.</summary>
    public static readonly byte[] Magic = Encoding.ASCII.GetBytes("GATIFCHK");

    /// <summary>Bytes of the header in front of the rows.</summary>
    public const int HeaderBytes = 32;

    /// <summary>Kind of a layer chunk stored as float32.</summary>
    public const int KindFloat32 = 0;

    /// <summary>Kind of a layer chunk stored as float16.</summary>
    public const int KindFloat16 = 1;

    /// <summary>Kind of a teacher chunk (base logits, base predicted key, ground-truth key).</summary>
    public const int KindTeacher = 2;

    /// <summary>The file of chunk <paramref name="chunk"/> of <paramref name="name"/> (a layer key or "teacher").</summary>
    public static string Path(string directory, string name, int chunk) =>
        System.IO.Path.Combine(directory, name, chunk.ToString("D5", CultureInfo.InvariantCulture) + ".bin");
}
