using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Data;

/// <summary>Builders for the ML.NET column annotations Gati.MLNet attaches.</summary>
internal static class Annotations
{
    /// <summary>KeyValues (class names) for a key column, so MapKeyToValue and evaluators show names.</summary>
    public static DataViewSchema.Annotations KeyValues(IReadOnlyList<string> names) =>
        TextVector(AnnotationUtils.Kinds.KeyValues, names);

    /// <summary>SlotNames for a score vector.</summary>
    public static DataViewSchema.Annotations SlotNames(IReadOnlyList<string> names) =>
        TextVector(AnnotationUtils.Kinds.SlotNames, names);

    private static DataViewSchema.Annotations TextVector(string kind, IReadOnlyList<string> names)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        var values = names.Select(n => n.AsMemory()).ToArray();
        ValueGetter<VBuffer<ReadOnlyMemory<char>>> getter = (ref VBuffer<ReadOnlyMemory<char>> dst) =>
            new VBuffer<ReadOnlyMemory<char>>(values.Length, values).CopyTo(ref dst);
        builder.Add(kind, new VectorDataViewType(TextDataViewType.Instance, values.Length), getter);
        return builder.ToAnnotations();
    }

    /// <summary>Reads the KeyValues of a key column as strings, or null when it has none.</summary>
    public static string[]? TryGetKeyNames(DataViewSchema.Column column)
    {
        var annotation = column.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues);
        if (annotation is null || annotation.Value.Type is not VectorDataViewType vector) return null;
        var count = vector.Size;
        if (vector.ItemType is TextDataViewType)
        {
            VBuffer<ReadOnlyMemory<char>> names = default;
            column.Annotations.GetValue(AnnotationUtils.Kinds.KeyValues, ref names);
            return names.DenseValues().Select(n => n.ToString()).ToArray();
        }
        // Keys over numbers (e.g. MapValueToKey on an integer column): show the numbers.
        var method = typeof(Annotations).GetMethod(nameof(ReadAsStrings), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(vector.ItemType.RawType);
        var result = (string[])method.Invoke(null, [column])!;
        return result.Length == count ? result : null;
    }

    private static string[] ReadAsStrings<T>(DataViewSchema.Column column)
    {
        VBuffer<T> values = default;
        column.Annotations.GetValue(AnnotationUtils.Kinds.KeyValues, ref values);
        return values.DenseValues().Select(v => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? "").ToArray();
    }
}
