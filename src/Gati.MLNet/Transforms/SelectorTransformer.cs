using System.Globalization;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Policy;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(SelectorTransformer), null, typeof(SignatureLoadModel), "Gati Selector", SelectorTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// A trained selector of one layer's predictor: reads the predictor's log-probabilities and adds the probability
/// that the predictor agrees with the base model (<c>L{n}.ExitProbability</c>, Single) and the exit decision at the
/// calibrated threshold (<c>L{n}.Exit</c>, Boolean).
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type</description></listheader>
/// <item><term>input: L{n}.{arch}.Score</term><description>Vector&lt;Single, k&gt; predictor log-probabilities</description></item>
/// <item><term>output: L{n}.ExitProbability</term><description>Single, P(hit)</description></item>
/// <item><term>output: L{n}.Exit</term><description>Boolean, P(hit) ≥ threshold</description></item>
/// </list>
/// </remarks>
public sealed class SelectorTransformer : GatiTransformerBase
{
    internal const string LoaderSignature = "GatiSelector";

    private readonly SharedModule<SelectorNetwork> _network;

    internal SelectorTransformer(IHostEnvironment environment, SharedModule<SelectorNetwork> network, int layer, string scoreColumnName,
        string exitProbabilityColumnName, string exitColumnName, ExitCalibration calibration, int batchSize)
        : base(environment, nameof(SelectorTransformer))
    {
        _network = network;
        Layer = layer;
        ScoreColumnName = scoreColumnName;
        ExitProbabilityColumnName = exitProbabilityColumnName;
        ExitColumnName = exitColumnName;
        Calibration = calibration;
        BatchSize = batchSize;
        _network.Module.eval();
    }

    /// <summary>The layer whose predictor this selector judges.</summary>
    public int Layer { get; }

    /// <summary>The selector network's architecture.</summary>
    public SelectorArchitecture Architecture => _network.Module.Architecture;

    /// <summary>The predictor log-probability column read.</summary>
    public string ScoreColumnName { get; }

    /// <summary>The P(hit) output column.</summary>
    public string ExitProbabilityColumnName { get; }

    /// <summary>The exit-decision output column.</summary>
    public string ExitColumnName { get; }

    /// <summary>The calibrated threshold and its held-out precision, recall and hit rate.</summary>
    public ExitCalibration Calibration { get; }

    /// <summary>Rows per forward pass.</summary>
    public int BatchSize { get; }

    internal SelectorNetwork Network => _network.Module;

    internal SharedModule<SelectorNetwork> AcquireNetwork() => _network.Acquire();

    /// <summary>Default output column names for a layer.</summary>
    public static (string ExitProbability, string Exit) DefaultColumnNames(int layer) =>
        (string.Create(CultureInfo.InvariantCulture, $"L{layer}.ExitProbability"), string.Create(CultureInfo.InvariantCulture, $"L{layer}.Exit"));

    private static VersionInfo GetVersionInfo() => ModelStreamVersion("GATISELE", 0x00010001, LoaderSignature);

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) => new Mapper(this, inputSchema);

    private protected override VersionInfo ModelVersion => GetVersionInfo();

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        // int32 layer; selector architecture; int32 classes; string score, exit-probability, exit columns;
        // calibration; int32 batch size; string weights key (GatiShared/)
        var writer = ctx.Writer;
        writer.Write(Layer);
        WriteArchitecture(writer, Architecture);
        writer.Write(_network.Module.Classes);
        writer.Write(ScoreColumnName);
        writer.Write(ExitProbabilityColumnName);
        writer.Write(ExitColumnName);
        WriteCalibration(writer, Calibration);
        writer.Write(BatchSize);
        using (_network.Use()) writer.Write(SharedWeights.Save(ctx, _network.Module));
    }

    internal static void WriteArchitecture(BinaryWriter writer, SelectorArchitecture architecture)
    {
        writer.Write((byte)architecture.Input);
        writer.Write(architecture.Hidden);
    }

    internal static SelectorArchitecture ReadArchitecture(BinaryReader reader)
    {
        var input = (SelectorInput)reader.ReadByte();
        var hidden = reader.ReadInt32();
        var architecture = new SelectorArchitecture(input, hidden);
        try
        {
            architecture.Validate();
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
        }
        return architecture;
    }

    internal static void WriteCalibration(BinaryWriter writer, ExitCalibration calibration)
    {
        writer.Write(calibration.Threshold);
        writer.Write(calibration.Precision);
        writer.Write(calibration.Recall);
        writer.Write(calibration.HitRate);
        writer.Write(calibration.Rows);
        writer.Write(calibration.PredictorAgreement);
        writer.Write(calibration.CorrectRows);
        writer.Write(calibration.Curve.Count);
        foreach (var point in calibration.Curve)
        {
            writer.Write(point.Threshold);
            writer.Write(point.Precision);
            writer.Write(point.HitRate);
            writer.Write(point.Exits);
        }
    }

    internal static ExitCalibration ReadCalibration(BinaryReader reader)
    {
        var calibration = new ExitCalibration(reader.ReadSingle(), reader.ReadDouble(), reader.ReadDouble(), reader.ReadDouble(), reader.ReadInt64(), reader.ReadDouble());
        var correct = reader.ReadInt64();
        var count = ModelText.ReadInt(reader, "calibration curve length", 0, 1 << 20);
        var curve = new CalibrationPoint[count];
        for (var i = 0; i < count; i++) curve[i] = new CalibrationPoint(reader.ReadSingle(), reader.ReadDouble(), reader.ReadDouble(), reader.ReadInt64());
        return calibration with { CorrectRows = correct, Curve = curve };
    }

    private static SelectorTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var reader = ctx.Reader;
        var layer = ModelText.ReadInt(reader, "layer", 1, 1000);
        var architecture = ReadArchitecture(reader);
        var classes = ModelText.ReadInt(reader, "classes", 2, 100_000);
        var score = reader.ReadString();
        var probability = reader.ReadString();
        var exit = reader.ReadString();
        var calibration = ReadCalibration(reader);
        var batchSize = ModelText.ReadInt(reader, "batch size", 1, 1 << 20);
        var weights = reader.ReadString();
        TorchRuntime.EnsureInitialized();
        var network = LoadNetwork(ctx, weights, layer, architecture, classes, () => DeviceOptions.ResolveForLoadedModel(env));
        return new SelectorTransformer(env, network, layer, score, probability, exit, calibration, batchSize);
    }

    /// <summary>A stored layer-<paramref name="layer"/> selector's network, from the zip's shared weights (built on first use).</summary>
    internal static SharedModule<SelectorNetwork> LoadNetwork(ModelLoadContext ctx, string key, int layer, SelectorArchitecture architecture, int classes,
        Func<Device> device) =>
        SharedWeights.Load(ctx, key, () => new SelectorNetwork(architecture, classes), device, $"layer-{layer} selector", architecture.ParameterCount(classes));

    private protected override void DisposeCore() => _network.Release();

    private sealed class Mapper : BatchMapper
    {
        private readonly SelectorTransformer _parent;

        public Mapper(SelectorTransformer parent, DataViewSchema inputSchema)
            : base(inputSchema, [parent.ScoreColumnName], parent.BatchSize)
        {
            _parent = parent;
            CheckInputSize(0, parent._network.Module.Classes, $"the layer-{parent.Layer} selector");
            Outputs = [OutputColumn.Single(parent.ExitProbabilityColumnName), OutputColumn.Boolean(parent.ExitColumnName)];
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }

        public override void Map(float[][] inputs, int count, Array?[] outputs, bool[] active)
        {
            var shared = _parent._network;
            var probabilities = new float[count];
            shared.Forward(inputs[0], count, [shared.Module.Classes],
                (network, x) => network.HitProbability(x).cpu().data<float>().CopyTo(probabilities, 0, 0));
            if (outputs[0] is float[] p) probabilities.CopyTo(p, 0);
            if (outputs[1] is bool[] exit)
                for (var i = 0; i < count; i++) exit[i] = Policy.ExitSimulation.Fires(probabilities[i], _parent.Calibration.Threshold);
        }
    }
}
