using System.Globalization;
using Gati.MLNet.Models;

namespace Gati.MLNet.Transforms;

/// <summary>
/// Names of feature columns: <c>Layer{n}</c> for a cut point's features, <c>Layer{n}.grid{g}</c> and
/// <c>Layer{n}.pool{p}</c> for them reduced (<see cref="FeatureReduction.Suffix"/>).
/// </summary>
internal static class FeatureColumns
{
    /// <summary>The cut point and reduction a column name stands for.</summary>
    /// <exception cref="ArgumentException">The name is not prefix + a cut point of <paramref name="baseModel"/> (+ a reduction suffix).</exception>
    public static FeatureRequest Parse(string column, string prefix, BaseModel baseModel)
    {
        if (column.StartsWith(prefix, StringComparison.Ordinal))
        {
            var rest = column[prefix.Length..];
            var dot = rest.IndexOf('.', StringComparison.Ordinal);
            var number = dot < 0 ? rest : rest[..dot];
            var suffix = dot < 0 ? "" : rest[(dot + 1)..];
            if (int.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out var layer) && layer >= 1 && layer <= baseModel.CutPoints.Count)
            {
                FeatureReduction? reduction = suffix switch
                {
                    "" => FeatureReduction.None,
                    _ when suffix.StartsWith("grid", StringComparison.Ordinal) && int.TryParse(suffix[4..], NumberStyles.None, CultureInfo.InvariantCulture, out var g) && g >= 1
                        => FeatureReduction.Grid(g),
                    _ when suffix.StartsWith("pool", StringComparison.Ordinal) && int.TryParse(suffix[4..], NumberStyles.None, CultureInfo.InvariantCulture, out var p) && p >= 1
                        => FeatureReduction.Flat(p),
                    _ => null,
                };
                if (reduction is not null) return new FeatureRequest(layer, reduction);
            }
        }
        throw new ArgumentException(
            $"Feature column '{column}' does not name a cut point of {baseModel.Description}: expected {prefix}1..{prefix}{baseModel.CutPoints.Count}, optionally with .grid{{g}} or .pool{{p}}.");
    }
}
