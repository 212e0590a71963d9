using System.Diagnostics.Metrics;
using System.Globalization;

namespace Gati.Extensions.ML;

/// <summary>
/// Instruments of the early-exit serving pool (System.Diagnostics.Metrics; export them with OpenTelemetry's
/// <c>AddMeter(ServingMetrics.MeterName)</c>):
/// <list type="table">
/// <item><term>gati.predictions</term><description>counter, tags model and exit ("full" or the layer number)</description></item>
/// <item><term>gati.cache.hit_ratio</term><description>gauge, share of predictions answered by a cache, per model</description></item>
/// <item><term>gati.prediction.duration</term><description>histogram (ms) of engine calls (one per batch), tag model</description></item>
/// <item><term>gati.prediction.latency</term><description>histogram (ms) per input: the engine call that answered it, tags model and exit ("full" or the layer number), so each exit's latency is visible</description></item>
/// <item><term>gati.batch.size</term><description>histogram of engine batch sizes, tag model</description></item>
/// <item><term>gati.batch.wait</term><description>histogram (ms) from a micro-batch's first request to its start: the batch delay as really waited, tag model</description></item>
/// <item><term>gati.model.reloads</term><description>counter, tags model and outcome (success, failure)</description></item>
/// <item><term>gati.agreement.live</term><description>gauge, live agreement with the base model over the last sampled requests, tags model and layer ("all" or the cache's layer); online caches only</description></item>
/// <item><term>gati.agreement.live.lower</term><description>gauge, its lower confidence bound (the figure the pool reacts to), same tags</description></item>
/// <item><term>gati.agreement.live.upper</term><description>gauge, its upper confidence bound, same tags</description></item>
/// <item><term>gati.cache.threshold</term><description>gauge, the exit threshold in force, tags model and layer (+∞ is reported as 2: the cache is off)</description></item>
/// <item><term>gati.cache.updates</term><description>counter, online update attempts, tags model and outcome (accepted, rejected, failed)</description></item>
/// <item><term>gati.cache.reactions</term><description>counter, thresholds raised because live agreement fell below the target, tags model and layer</description></item>
/// </list>
/// </summary>
public sealed class ServingMetrics : IDisposable
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Gati.MLNet.Serving";

    private readonly Meter _meter;
    private readonly Counter<long> _predictions;
    private readonly Histogram<double> _duration;
    private readonly Histogram<double> _latency;
    private readonly Histogram<int> _batchSize;
    private readonly Histogram<double> _batchWait;
    private readonly Counter<long> _reloads;
    private readonly Counter<long> _updates;
    private readonly Counter<long> _reactions;
    private readonly Dictionary<string, (long Total, long Early)> _hits = [];
    private readonly Dictionary<string, Gati.MLNet.Online.OnlineCaches> _online = [];
    private readonly object _gate = new();

    /// <summary>Creates the instruments (one set per pool).</summary>
    public ServingMetrics(IMeterFactory? factory = null)
    {
        _meter = factory?.Create(MeterName) ?? new Meter(MeterName);
        _predictions = _meter.CreateCounter<long>("gati.predictions", "{prediction}", "Predictions served, by exit layer.");
        _duration = _meter.CreateHistogram<double>("gati.prediction.duration", "ms", "Wall time of an engine call (one batch).");
        _latency = _meter.CreateHistogram<double>("gati.prediction.latency", "ms", "Per input, the wall time of the engine call that answered it, by exit layer.");
        _batchSize = _meter.CreateHistogram<int>("gati.batch.size", "{input}", "Inputs per engine call.");
        _batchWait = _meter.CreateHistogram<double>("gati.batch.wait", "ms", "Time from a micro-batch's first request to the start of its engine call.");
        _reloads = _meter.CreateCounter<long>("gati.model.reloads", "{reload}", "Model loads after a change of the model file.");
        _meter.CreateObservableGauge("gati.cache.hit_ratio", ObserveHitRatio, "1", "Share of predictions answered early by a learned cache.");
        _updates = _meter.CreateCounter<long>("gati.cache.updates", "{update}", "Online update attempts, by outcome.");
        _reactions = _meter.CreateCounter<long>("gati.cache.reactions", "{reaction}", "Exit thresholds raised because live agreement fell below the target.");
        _meter.CreateObservableGauge("gati.agreement.live", () => ObserveAgreement(a => a.Estimate, l => l.Estimate), "1",
            "Live agreement with the base model over the last sampled requests.");
        _meter.CreateObservableGauge("gati.agreement.live.lower", () => ObserveAgreement(a => a.Lower, l => l.Lower), "1",
            "Lower confidence bound of live agreement.");
        _meter.CreateObservableGauge("gati.agreement.live.upper", () => ObserveAgreement(a => a.Upper, l => l.Upper), "1",
            "Upper confidence bound of live agreement.");
        _meter.CreateObservableGauge("gati.cache.threshold", ObserveThresholds, "1", "Exit threshold in force (2 when the cache is off).");
    }

    internal void RecordBatch(string model, IReadOnlyList<int> exitLayers, double milliseconds)
    {
        var early = 0;
        foreach (var layer in exitLayers)
        {
            if (layer > 0) early++;
            var exit = new KeyValuePair<string, object?>("exit", layer == 0 ? "full" : layer.ToString(CultureInfo.InvariantCulture));
            _predictions.Add(1, new KeyValuePair<string, object?>("model", model), exit);
            _latency.Record(milliseconds, new KeyValuePair<string, object?>("model", model), exit);
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

    internal void RecordUpdate(string model, Gati.MLNet.Online.UpdateOutcome outcome) =>
        _updates.Add(1, new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("outcome",
            outcome.Accepted ? "accepted" : outcome.Reason.StartsWith("failed", StringComparison.Ordinal) ? "failed" : "rejected"));

    internal void RecordReaction(string model, int layer) =>
        _reactions.Add(1, new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("layer", layer.ToString(CultureInfo.InvariantCulture)));

    internal void TrackOnline(string model, Gati.MLNet.Online.OnlineCaches online)
    {
        lock (_gate) _online[model] = online;
    }

    internal void UntrackOnline(string model, Gati.MLNet.Online.OnlineCaches online)
    {
        lock (_gate)
        {
            if (_online.TryGetValue(model, out var tracked) && ReferenceEquals(tracked, online)) _online.Remove(model);
        }
    }

    private KeyValuePair<string, Gati.MLNet.Online.OnlineCaches>[] Tracked()
    {
        lock (_gate) return _online.ToArray();
    }

    private List<Measurement<double>> ObserveAgreement(Func<Gati.MLNet.Online.LiveAgreementSnapshot, double> overall,
        Func<Gati.MLNet.Online.LayerAgreement, double> perLayer)
    {
        var measurements = new List<Measurement<double>>();
        foreach (var (model, online) in Tracked())
        {
            var snapshot = online.Sampler.Agreement;
            if (snapshot.Requests > 0)
                measurements.Add(new Measurement<double>(overall(snapshot), new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("layer", "all")));
            foreach (var layer in snapshot.Layers.Where(l => l.Exits > 0))
                measurements.Add(new Measurement<double>(perLayer(layer), new KeyValuePair<string, object?>("model", model),
                    new KeyValuePair<string, object?>("layer", layer.Layer.ToString(CultureInfo.InvariantCulture))));
        }
        return measurements;
    }

    private IEnumerable<Measurement<double>> ObserveThresholds() =>
        Tracked().SelectMany(t => t.Value.Sampler.Agreement.Layers.Select(l => new Measurement<double>(float.IsFinite(l.Threshold) ? l.Threshold : 2.0,
            new KeyValuePair<string, object?>("model", t.Key), new KeyValuePair<string, object?>("layer", l.Layer.ToString(CultureInfo.InvariantCulture))))).ToArray();

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
