namespace Gati.Extensions.ML;

/// <summary>A prediction with the status of the model generation that made it.</summary>
/// <typeparam name="TOutput">The pool's output class.</typeparam>
/// <param name="Model">The generation's status: the input shape and class names the prediction was made with.</param>
/// <param name="Output">The prediction.</param>
public sealed record ModelPrediction<TOutput>(ModelStatus Model, TOutput Output);
