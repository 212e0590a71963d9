using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// Finds the base model behind a data view, so that estimators appended after the base model in a pipeline
/// (<c>resnetEstimator.Append(gati.ExtractFeatures(...))</c>) can use its network: from the base model's annotation on
/// the view's columns (<see cref="BaseModelAnnotation"/>: survives ML.NET transforms and cache checkpoints), else by
/// walking from the view through the views it reads from to the nearest base-model transformer.
/// </summary>
internal static class BaseModelLocator
{
    public static BaseNetwork? Find(IDataView view) => BaseModelAnnotation.Find(view.Schema) ?? FindInLineage(view);

    private static BaseNetwork? FindInLineage(IDataView view)
    {
        for (var depth = 0; depth < 64 && view is not null; depth++)
        {
            switch (view)
            {
                case BatchMappedDataView mapped:
                    if (mapped.Owner is IBaseModelHolder holder) return holder.Base;
                    view = mapped.Source;
                    break;
                case IDataTransform transform:
                    view = transform.Source;
                    break;
                default:
                    return null;
            }
        }
        return null;
    }

    public static BaseNetwork Require(IDataView view, string component, string paramName = "input") =>
        Find(view) ?? throw new ArgumentException(MissingMessage(component), paramName);

    /// <summary>The image column read by the base model that <paramref name="schema"/> comes from (for GetOutputSchema).</summary>
    public static string RequireImageColumn(SchemaShape schema, string component, string paramName = "inputSchema") =>
        BaseModelAnnotation.FindImageColumn(schema) ?? throw new ArgumentException(MissingMessage(component), paramName);

    private static string MissingMessage(string component) =>
        $"{component} needs the base model: append it after a Gati base model in the pipeline (resnetEstimator.Append(...), or after the " +
        "transformer of mlContext.Gati().ImportBaseModel / ImportOnnxModel), or pass the fitted base model explicitly.";
}

/// <summary>A transformer that runs (or is) a base model.</summary>
internal interface IBaseModelHolder
{
    BaseNetwork Base { get; }
}

/// <summary>A base model as components built on it see it: the model and the image column it reads.</summary>
/// <param name="Model">The base model (call <see cref="Models.BaseModel.Acquire"/> to hold it).</param>
/// <param name="ImageColumnName">The image column the base model reads.</param>
internal sealed record BaseNetwork(Models.BaseModel Model, string ImageColumnName)
{
    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames => Model.ClassNames;

    /// <summary>The per-channel normalisation of the input images, when known.</summary>
    public Data.ChannelNormalization? InputNormalization => Model.InputNormalization;
}
