using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// Finds the base ResNet behind a data view, so that estimators appended after the base model in a pipeline
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
        $"{component} needs the base model: append it after a Gati ResNet in the pipeline " +
        "(resnetEstimator.Append(...)), or pass the fitted base model (a ResNetTransformer) explicitly.";
}

/// <summary>A transformer that runs (or is) a base ResNet.</summary>
internal interface IBaseModelHolder
{
    BaseNetwork Base { get; }
}

/// <summary>A base ResNet as components built on it see it: the shared network, class names and image column.</summary>
/// <param name="Network">The shared network (call <see cref="Gati.MLNet.ModelFormat.SharedModule{TModule}.Acquire"/> to hold it).</param>
/// <param name="ClassNames">Class names in label order.</param>
/// <param name="ImageColumnName">The image column the base model reads.</param>
/// <param name="InputNormalization">The per-channel normalisation of the training images, when known.</param>
internal sealed record BaseNetwork(Gati.MLNet.ModelFormat.SharedModule<Gati.MLNet.Models.ResNet> Network, IReadOnlyList<string> ClassNames, string ImageColumnName,
    Gati.MLNet.Data.ChannelNormalization? InputNormalization)
{
    public Gati.MLNet.Models.ResNetConfig Config => Network.Module.Config;
}
