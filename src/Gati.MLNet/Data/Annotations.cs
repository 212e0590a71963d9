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

    /// <summary>Annotation kinds recording the per-channel normalisation an image column went through.</summary>
    public const string ChannelMeanKind = "GatiChannelMean";

    /// <inheritdoc cref="ChannelMeanKind"/>
    public const string ChannelStdKind = "GatiChannelStd";

    /// <summary>Annotations recording a normalisation on an image column (so trainers can store it in the model).</summary>
    public static DataViewSchema.Annotations Normalization(ChannelNormalization normalization)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        var mean = normalization.Mean.ToArray();
        var std = normalization.Std.ToArray();
        ValueGetter<VBuffer<float>> meanGetter = (ref VBuffer<float> dst) => new VBuffer<float>(mean.Length, mean).CopyTo(ref dst);
        ValueGetter<VBuffer<float>> stdGetter = (ref VBuffer<float> dst) => new VBuffer<float>(std.Length, std).CopyTo(ref dst);
        builder.Add(ChannelMeanKind, new VectorDataViewType(NumberDataViewType.Single, mean.Length), meanGetter);
        builder.Add(ChannelStdKind, new VectorDataViewType(NumberDataViewType.Single, std.Length), stdGetter);
        return builder.ToAnnotations();
    }

    /// <summary>The normalisation recorded on an image column, or null.</summary>
    public static ChannelNormalization? TryGetNormalization(DataViewSchema.Column column)
    {
        var schema = column.Annotations.Schema;
        if (schema.GetColumnOrNull(ChannelMeanKind) is null || schema.GetColumnOrNull(ChannelStdKind) is null) return null;
        VBuffer<float> mean = default, std = default;
        column.Annotations.GetValue(ChannelMeanKind, ref mean);
        column.Annotations.GetValue(ChannelStdKind, ref std);
        try
        {
            return new ChannelNormalization(mean.DenseValues().ToArray(), std.DenseValues().ToArray());
        }
        catch (ArgumentException)
        {
            return null;
        }
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
