using System.Diagnostics.Metrics;
using System.Globalization;

namespace Gati.Extensions.ML;

/// <summary>
/// Instruments of the early-exit serving pool (System.Diagnostics.Metrics; export them with OpenTelemetry's
/// <c>AddMeter(ServingMetrics.MeterName)</c>):
/// <list type="table">
/// <item><term>gati.predictions</term><description>counter, tags model and exit ("full" or the layer number)</description></item>
/// <item><term>gati.cache.hit_ratio</term><description>gauge, share of predictions answered by a cache, per model</description></item>
/// <item><term>gati.prediction.duration</term><description>histogram (ms) of engine calls, tags model and batch size bucket</description></item>
/// <item><term>gati.batch.size</term><description>histogram of engine batch sizes, tag model</description></item>
/// <item><term>gati.batch.wait</term><description>histogram (ms) from a micro-batch's first request to its start: the batch delay as really waited, tag model</description></item>
/// <item><term>gati.model.reloads</term><description>counter, tags model and outcome (success, failure)</description></item>
/// </list>
/// </summary>
public sealed class ServingMetrics : IDisposable
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Gati.MLNet.Serving";

    private readonly Meter _meter;
    private readonly Counter<long> _predictions;
    private readonly Histogram<double> _duration;
    private readonly Histogram<int> _batchSize;
    private readonly Histogram<double> _batchWait;
    private readonly Counter<long> _reloads;
    private readonly Dictionary<string, (long Total, long Early)> _hits = [];
    private readonly object _gate = new();

    /// <summary>Creates the instruments (one set per pool).</summary>
    public ServingMetrics(IMeterFactory? factory = null)
    {
        _meter = factory?.Create(MeterName) ?? new Meter(MeterName);
        _predictions = _meter.CreateCounter<long>("gati.predictions", "{prediction}", "Predictions served, by exit layer.");
        _duration = _meter.CreateHistogram<double>("gati.prediction.duration", "ms", "Wall time of an engine call (one batch).");
        _batchSize = _meter.CreateHistogram<int>("gati.batch.size", "{input}", "Inputs per engine call.");
        _batchWait = _meter.CreateHistogram<double>("gati.batch.wait", "ms", "Time from a micro-batch's first request to the start of its engine call.");
        _reloads = _meter.CreateCounter<long>("gati.model.reloads", "{reload}", "Model loads after a change of the model file.");
        _meter.CreateObservableGauge("gati.cache.hit_ratio", ObserveHitRatio, "1", "Share of predictions answered early by a learned cache.");
    }

    internal void RecordBatch(string model, IReadOnlyList<int> exitLayers, double milliseconds)
    {
        var early = 0;
        foreach (var layer in exitLayers)
        {
            if (layer > 0) early++;
            _predictions.Add(1, new KeyValuePair<string, object?>("model", model),
                new KeyValuePair<string, object?>("exit", layer == 0 ? "full" : layer.ToString(CultureInfo.InvariantCulture)));
        }
        _duration.Record(milliseconds, new KeyValuePair<string, object?>("model", model));
        _batchSize.Record(exitLayers.Count, new KeyValuePair<string, object?>("model", model));
        lock (_gate)
        {
            var (total, hits) = _hits.GetValueOrDefault(model);
            _hits[model] = (total + exitLayers.Count, hits + early);
        }
    }

    internal void RecordBatchWait(string model, double milliseconds) =>
        _batchWait.Record(milliseconds, new KeyValuePair<string, object?>("model", model));

    internal void RecordReload(string model, bool success) =>
        _reloads.Add(1, new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("outcome", success ? "success" : "failure"));

    private IEnumerable<Measurement<double>> ObserveHitRatio()
    {
        lock (_gate)
            return _hits.Where(h => h.Value.Total > 0)
                .Select(h => new Measurement<double>((double)h.Value.Early / h.Value.Total, new KeyValuePair<string, object?>("model", h.Key)))
                .ToArray();
    }

    /// <summary>Disposes the meter.</summary>
    public void Dispose() => _meter.Dispose();
}
