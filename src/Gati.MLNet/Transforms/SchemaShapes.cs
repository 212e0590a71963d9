using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>SchemaShape columns that estimators declare for their outputs (the constructor is ML.NET-internal).</summary>
internal static class SchemaShapes
{
    public static SchemaShape.Column ScoreColumn(string name, params SchemaShape.Column[] annotations) =>
        new(name, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, isKey: false,
            new SchemaShape([new SchemaShape.Column(AnnotationUtils.Kinds.SlotNames, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false), .. annotations]));

    public static SchemaShape.Column KeyColumn(string name, params SchemaShape.Column[] annotations) =>
        new(name, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.UInt32, isKey: true,
            new SchemaShape([new SchemaShape.Column(AnnotationUtils.Kinds.KeyValues, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false), .. annotations]));

    /// <summary>Checks that <paramref name="name"/> is a known-size Vector&lt;Single&gt; column of <paramref name="schema"/>.</summary>
    /// <exception cref="ArgumentException">It is missing or has another type.</exception>
    public static void RequireImage(SchemaShape schema, string name, string reader, string paramName = "inputSchema")
    {
        if (!schema.TryFindColumn(name, out var image))
            throw new ArgumentException($"Image column '{name}' (read by {reader}) not found; the data has: {string.Join(", ", schema.Select(c => c.Name))}.", paramName);
        if (image.Kind != SchemaShape.Column.VectorKind.Vector || image.ItemType != NumberDataViewType.Single)
            throw new ArgumentException($"Image column '{name}' (read by {reader}) must be a known-size Vector<Single>.", paramName);
    }

    public static SchemaShape.Column VectorColumn(string name) =>
        new(name, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, isKey: false);

    public static SchemaShape.Column ScalarColumn(string name, DataViewType type) =>
        new(name, SchemaShape.Column.VectorKind.Scalar, type, isKey: false);
}
