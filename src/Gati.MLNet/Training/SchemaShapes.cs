using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Training;

/// <summary>SchemaShape columns that estimators declare for their outputs (the constructor is ML.NET-internal).</summary>
internal static class SchemaShapes
{
    public static SchemaShape.Column ScoreColumn(string name) =>
        new(name, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, isKey: false,
            new SchemaShape([new SchemaShape.Column(AnnotationUtils.Kinds.SlotNames, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false)]));

    public static SchemaShape.Column KeyColumn(string name) =>
        new(name, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.UInt32, isKey: true,
            new SchemaShape([new SchemaShape.Column(AnnotationUtils.Kinds.KeyValues, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false)]));

    public static SchemaShape.Column VectorColumn(string name) =>
        new(name, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, isKey: false);

    public static SchemaShape.Column ScalarColumn(string name, DataViewType type) =>
        new(name, SchemaShape.Column.VectorKind.Scalar, type, isKey: false);
}
