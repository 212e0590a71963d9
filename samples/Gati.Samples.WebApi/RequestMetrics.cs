using System.Diagnostics.Metrics;

namespace Gati.Samples.WebApi;

/// <summary>
/// Where a /predict request's time goes inside the handler, in milliseconds (meter <see cref="MeterName"/>, exported at
/// /metrics with the pool's own): reading the body, decoding the image, and waiting for the pool's answer (queueing in
/// the micro-batcher plus the engine call; the pool's <c>gati.batch.wait</c> and <c>gati.prediction.duration</c> split it).
/// The rest of a request's time, as a client sees it, is ASP.NET Core's and the network's.
/// </summary>
public sealed class RequestMetrics
{
    public const string MeterName = "Gati.Samples.WebApi";

    public RequestMetrics(IMeterFactory factory)
    {
        var meter = factory.Create(MeterName);
        Read = meter.CreateHistogram<double>("webapi.request.read", "ms", "Reading a /predict request's body.");
        Decode = meter.CreateHistogram<double>("webapi.request.decode", "ms", "Decoding a /predict request's image (PNG, JPEG or JSON) into the model's input.");
        Predict = meter.CreateHistogram<double>("webapi.request.predict", "ms", "Waiting for the pool's answer to a /predict request: queueing and the engine call.");
    }

    public Histogram<double> Read { get; }

    public Histogram<double> Decode { get; }

    public Histogram<double> Predict { get; }
}
