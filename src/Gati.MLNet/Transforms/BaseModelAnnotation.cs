using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// How a pipeline stage finds the base model before it: the base model's output columns (Score and PredictedLabel)
/// carry an annotation of kind <see cref="Kind"/> whose value is the base network. Annotations travel with the schema
/// through ML.NET's transforms and cache checkpoints (<c>AppendCacheCheckpoint</c>), so
/// <c>resnet.Append(ml.Gati().LearnedCaches(...))</c> works whatever sits between the two; and the annotation's type
/// names the image column the base model reads, so <c>GetOutputSchema</c> can check that column before any training.
/// </summary>
internal static class BaseModelAnnotation
{
    /// <summary>The annotation kind.</summary>
    public const string Kind = "GatiBaseModel";

    /// <summary>The annotation for the outputs of <paramref name="network"/>.</summary>
    public static DataViewSchema.Annotations Create(BaseNetwork network)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        ValueGetter<BaseNetwork> getter = (ref BaseNetwork value) => value = network;
        builder.Add(Kind, new BaseModelDataViewType(network.ImageColumnName), getter);
        return builder.ToAnnotations();
    }

    /// <summary><paramref name="annotations"/> with the base-model annotation added.</summary>
    public static DataViewSchema.Annotations Add(DataViewSchema.Annotations annotations, BaseNetwork network)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        builder.Add(annotations, _ => true);
        builder.Add(Create(network), _ => true);
        return builder.ToAnnotations();
    }

    /// <summary>The shape of the annotation, for estimators' <c>GetOutputSchema</c>.</summary>
    public static SchemaShape.Column Shape(string imageColumnName) =>
        new(Kind, SchemaShape.Column.VectorKind.Scalar, new BaseModelDataViewType(imageColumnName), isKey: false);

    /// <summary>The base network announced by the last column that carries the annotation, or null.</summary>
    public static BaseNetwork? Find(DataViewSchema schema)
    {
        for (var i = schema.Count - 1; i >= 0; i--)
        {
            var annotations = schema[i].Annotations;
            if (annotations.Schema.GetColumnOrNull(Kind) is not { Type: BaseModelDataViewType }) continue;
            BaseNetwork? network = null;
            annotations.GetValue(Kind, ref network);
            if (network is not null) return network;
        }
        return null;
    }

    /// <summary>The image column read by the base model announced in <paramref name="schema"/>, or null when none is.</summary>
    public static string? FindImageColumn(SchemaShape schema)
    {
        string? found = null;
        foreach (var column in schema)
            if (column.Annotations.TryFindColumn(Kind, out var annotation) && annotation.ItemType is BaseModelDataViewType type)
                found = type.ImageColumnName;
        return found;
    }
}

/// <summary>
/// The type of the <see cref="BaseModelAnnotation"/> value: a reference to a base network, typed by the image column
/// it reads (so that a <see cref="SchemaShape"/>, which keeps annotation types but not values, still knows it).
/// </summary>
internal sealed class BaseModelDataViewType : StructuredDataViewType
{
    public BaseModelDataViewType(string imageColumnName)
        : base(typeof(BaseNetwork))
    {
        ImageColumnName = imageColumnName;
    }

    public string ImageColumnName { get; }

    public override bool Equals(DataViewType? other) => other is BaseModelDataViewType type && type.ImageColumnName == ImageColumnName;

    public override bool Equals(object? obj) => obj is DataViewType other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(typeof(BaseModelDataViewType), ImageColumnName);

    public override string ToString() => $"GatiBaseModel<{ImageColumnName}>";
}
