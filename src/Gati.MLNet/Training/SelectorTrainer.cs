using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Policy;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Gati.MLNet.Training;

/// <summary>
/// Trains a selector for one predictor on data held out from the predictor's training: target "predictor label
/// == base label", classes weighted by frequency; then calibrates the exit threshold to reach a target precision
/// (default 99.5%) on calibration rows and reports precision and recall of "hit". Create it with
/// <see cref="GatiCatalog.Selector(PredictorTransformer, SelectorTrainer.Options?)"/>.
/// </summary>
/// <remarks>
/// Inputs: the predictor's score (log-probabilities) and predicted-label columns and the base model's predicted
/// label. Outputs: <c>L{n}.ExitProbability</c> (Single) and <c>L{n}.Exit</c> (Boolean).
/// Unless <see cref="Options.CalibrationSet"/> is given, the last <see cref="Options.CalibrationFraction"/> of the
/// rows calibrate the threshold and the others train the network.
/// </remarks>
public sealed class SelectorTrainer : IEstimator<SelectorTransformer>
{
    private readonly IHost _host;
    private readonly Options _options;

    internal SelectorTrainer(IHostEnvironment environment, Options options)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _host = environment.Register(nameof(SelectorTrainer));
        _options = options;
    }

    /// <summary>The settings this estimator uses (its own copy where the catalog filled some in).</summary>
    internal Options Settings => _options;

    /// <summary>Settings of a selector.</summary>
    public sealed class Options
    {
        /// <summary>The layer of the predictor judged (for naming).</summary>
        public int Layer { get; set; }

        /// <summary>The predictor's log-probability column.</summary>
        public string ScoreColumnName { get; set; } = "";

        /// <summary>The predictor's predicted-label column.</summary>
        public string PredictedLabelColumnName { get; set; } = "";

        /// <summary>The base model's predicted label.</summary>
        public string TeacherLabelColumnName { get; set; } = "BasePredictedLabel";

        /// <summary>Output P(hit) column; null = L{n}.ExitProbability.</summary>
        public string? ExitProbabilityColumnName { get; set; }

        /// <summary>Output exit-decision column; null = L{n}.Exit.</summary>
        public string? ExitColumnName { get; set; }

        /// <summary>Network, target precision and recipe.</summary>
        public SelectorTrainingSettings Training { get; set; } = new();

        /// <summary>Share of the rows (the last ones) that calibrate the threshold, when no CalibrationSet is given.</summary>
        public double CalibrationFraction { get; set; } = 0.4;

        /// <summary>Separate calibration data (same columns).</summary>
        public IDataView? CalibrationSet { get; set; }

        /// <summary>Seed; null uses the MLContext's seed, else 0.</summary>
        public int? Seed { get; set; }

        /// <summary>auto, cpu, cuda or cuda:N.</summary>
        public string Device { get; set; } = DeviceOptions.Auto;

        /// <summary>A copy (nested settings are shared, never modified): the catalog fills in its copy, not the caller's.</summary>
        internal Options Clone() => (Options)MemberwiseClone();

        internal void Validate()
        {
            if (Layer < 1) throw new ArgumentOutOfRangeException(nameof(Layer), Layer, "Layer must be 1 or more.");
            ArgumentException.ThrowIfNullOrWhiteSpace(ScoreColumnName, nameof(ScoreColumnName));
            ArgumentException.ThrowIfNullOrWhiteSpace(PredictedLabelColumnName, nameof(PredictedLabelColumnName));
            ArgumentException.ThrowIfNullOrWhiteSpace(TeacherLabelColumnName, nameof(TeacherLabelColumnName));
            Training.Validate();
            if (CalibrationSet is null && CalibrationFraction is <= 0 or >= 1)
                throw new ArgumentOutOfRangeException(nameof(CalibrationFraction), CalibrationFraction, "Must be in (0, 1).");
            DeviceOptions.Validate(Device, nameof(Device));
        }
    }

    /// <summary>Trains the selector and calibrates its threshold.</summary>
    public SelectorTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        TorchRuntime.EnsureInitialized();
        var (logProbabilities, correct, classes) = PredictorOutputs.Read(input, _options.ScoreColumnName, _options.PredictedLabelColumnName, _options.TeacherLabelColumnName);
        float[] trainX, calibrationX;
        bool[] trainY, calibrationY;
        if (_options.CalibrationSet is { } calibration)
        {
            (trainX, trainY) = (logProbabilities, correct);
            (calibrationX, calibrationY, _) = PredictorOutputs.Read(calibration, _options.ScoreColumnName, _options.PredictedLabelColumnName, _options.TeacherLabelColumnName);
        }
        else
        {
            var rows = correct.Length;
            var trainRows = (int)Math.Round(rows * (1 - _options.CalibrationFraction));
            if (trainRows < 1 || trainRows >= rows) throw new ArgumentException($"{rows} rows are too few to split into selector training and calibration.", nameof(input));
            trainX = logProbabilities[..(trainRows * classes)];
            trainY = correct[..trainRows];
            calibrationX = logProbabilities[(trainRows * classes)..];
            calibrationY = correct[trainRows..];
        }
        var device = DeviceOptions.Resolve(_options.Device, _host);
        var seed = _options.Seed ?? (_host as IHostEnvironmentInternal)?.Seed ?? 0;
        var network = SelectorTraining.Train(trainX, trainY, classes, _options.Training, seed, device);
        var probabilities = SelectorTraining.HitProbabilities(network, calibrationX, classes, device);
        var result = ExitCalibration.Calibrate(probabilities, calibrationY, _options.Training.TargetPrecision, _options.Training.MinimumHits);
        var names = SelectorTransformer.DefaultColumnNames(_options.Layer);
        return new SelectorTransformer(_host, new SharedModule<Models.Selectors.SelectorNetwork>(network, device), _options.Layer, _options.ScoreColumnName,
            _options.ExitProbabilityColumnName ?? names.ExitProbability, _options.ExitColumnName ?? names.Exit, result, 256);
    }

    /// <summary>Declares the exit-probability and exit columns.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        foreach (var name in new[] { _options.ScoreColumnName, _options.PredictedLabelColumnName, _options.TeacherLabelColumnName })
            if (!inputSchema.TryFindColumn(name, out _)) throw new ArgumentException($"Column '{name}' not found.");
        var names = SelectorTransformer.DefaultColumnNames(_options.Layer);
        var columns = inputSchema.ToDictionary(c => c.Name);
        var probability = _options.ExitProbabilityColumnName ?? names.ExitProbability;
        var exit = _options.ExitColumnName ?? names.Exit;
        columns[probability] = SchemaShapes.ScalarColumn(probability, NumberDataViewType.Single);
        columns[exit] = SchemaShapes.ScalarColumn(exit, BooleanDataViewType.Instance);
        return new SchemaShape(columns.Values);
    }
}

/// <summary>Reads a predictor's outputs and agreement with the base model from a data view (k floats per row: small).</summary>
internal static class PredictorOutputs
{
    /// <summary>Outputs of several predictors in one pass (each tuple: score column, predicted-label column).</summary>
    public static (float[] LogProbabilities, bool[] Correct)[] ReadMany(IDataView data, IReadOnlyList<(string Score, string Predicted)> predictors, string teacherColumn, int classes)
    {
        var teacher = TrainingColumns.RequireKeyLabel(data.Schema, teacherColumn, out _);
        var scores = predictors.Select(p => TrainingColumns.RequireImage(data.Schema, p.Score, classes)).ToArray();
        var predicted = predictors.Select(p => TrainingColumns.RequireKeyLabel(data.Schema, p.Predicted, out _)).ToArray();
        var logProbabilities = predictors.Select(_ => new List<float>()).ToArray();
        var correct = predictors.Select(_ => new List<bool>()).ToArray();
        using var cursor = data.GetRowCursor([teacher, .. scores, .. predicted]);
        var getTeacher = cursor.GetGetter<uint>(teacher);
        var getScores = scores.Select(c => cursor.GetGetter<VBuffer<float>>(c)).ToArray();
        var getPredicted = predicted.Select(c => cursor.GetGetter<uint>(c)).ToArray();
        VBuffer<float> values = default;
        uint t = 0, p = 0;
        while (cursor.MoveNext())
        {
            getTeacher(ref t);
            for (var i = 0; i < predictors.Count; i++)
            {
                getScores[i](ref values);
                getPredicted[i](ref p);
                foreach (var v in values.DenseValues()) logProbabilities[i].Add(v);
                correct[i].Add(p == t);
            }
        }
        return logProbabilities.Select((l, i) => (l.ToArray(), correct[i].ToArray())).ToArray();
    }

    public static (float[] LogProbabilities, bool[] Correct, int Classes) Read(IDataView data, string scoreColumn, string predictedColumn, string teacherColumn)
    {
        var score = TrainingColumns.RequireImage(data.Schema, scoreColumn);
        var predicted = TrainingColumns.RequireKeyLabel(data.Schema, predictedColumn, out var classes);
        var teacher = TrainingColumns.RequireKeyLabel(data.Schema, teacherColumn, out var teacherClasses);
        if (((VectorDataViewType)score.Type).Size != classes || teacherClasses != classes)
            throw new ArgumentException($"'{scoreColumn}', '{predictedColumn}' and '{teacherColumn}' disagree on the number of classes.");
        var logProbabilities = new List<float>();
        var correct = new List<bool>();
        using var cursor = data.GetRowCursor([score, predicted, teacher]);
        var getScore = cursor.GetGetter<VBuffer<float>>(score);
        var getPredicted = cursor.GetGetter<uint>(predicted);
        var getTeacher = cursor.GetGetter<uint>(teacher);
        VBuffer<float> values = default;
        uint p = 0, t = 0;
        while (cursor.MoveNext())
        {
            getScore(ref values);
            getPredicted(ref p);
            getTeacher(ref t);
            if (t == 0) throw new InvalidDataException($"Row {cursor.Position}: '{teacherColumn}' is missing.");
            foreach (var v in values.DenseValues())
            {
                if (!float.IsFinite(v) && !float.IsNegativeInfinity(v))
                    throw new InvalidDataException($"Row {cursor.Position}: '{scoreColumn}' holds {v}.");
                logProbabilities.Add(v);
            }
            correct.Add(p == t);
        }
        if (correct.Count == 0) throw new ArgumentException("The data has no rows.", nameof(data));
        return (logProbabilities.ToArray(), correct.ToArray(), classes);
    }
}
