// Loads an ML.NET model zip with plain mlContext.Model.Load (no Gati registration call), scores the first
// rows of a Fashion-MNIST-format folder, and writes every float and key output column to a binary file:
// for each row, for each requested column in order, its values (floats as IEEE-754, keys as uint32, Int32 as
// int32, Boolean as one byte).
// Usage: Gati.MLNet.ModelProbe <model.zip> <idx-folder> <split: train|test> <rows> <output> <column>...
// Or: Gati.MLNet.ModelProbe engine-description <model.zip> <threads>: the first ONNX Runtime early-exit engine of a
// fresh process, as it describes itself (its threading is decided once per process).
// Or: Gati.MLNet.ModelProbe onnx-serving <model.zip> <rows>: serves random images on ONNX Runtime and says whether the
// process loaded libtorch (from /proc/self/maps).
using Gati.MLNet;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Microsoft.ML;
using Microsoft.ML.Data;

if (args is ["engine-description", var modelPath, var threads])
{
    var engineContext = new MLContext();
    var loaded = engineContext.Model.Load(modelPath, out _);
    var options = new EarlyExitEngineOptions { Device = "cpu", IntraOpThreads = int.Parse(threads, System.Globalization.CultureInfo.InvariantCulture) };
    using var engine = engineContext.Gati().CreateEarlyExitEngine<ProbeImage, EarlyExitPrediction>(loaded, options);
    Console.WriteLine(engine.BackendDescription);
    return 0;
}

if (args is ["onnx-serving", var servedPath, var count])
{
    // Serves a model on ONNX Runtime and reports whether this process loaded libtorch (it must not need to).
    var servingContext = new MLContext();
    var served = servingContext.Model.Load(servedPath, out _);
    using var engine = servingContext.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(served, new EarlyExitEngineOptions { Device = "cpu" });
    var random = new Random(5);
    var images = Enumerable.Range(0, int.Parse(count, System.Globalization.CultureInfo.InvariantCulture))
        .Select(_ => new ImageInput { Image = Enumerable.Range(0, engine.InputShape.Size).Select(_ => (float)random.NextDouble()).ToArray() }).ToArray();
    var answers = engine.Predict(images);
    Console.WriteLine($"predicted {answers.Length}: exits {string.Join(",", answers.Select(a => a.ExitLayer))}");
    var maps = File.ReadAllText("/proc/self/maps");
    Console.WriteLine($"libtorch loaded: {(maps.Contains("libtorch", StringComparison.Ordinal) || maps.Contains("LibTorchSharp", StringComparison.Ordinal) ? "yes" : "no")}");
    Console.WriteLine($"onnxruntime loaded: {(maps.Contains("libonnxruntime", StringComparison.Ordinal) ? "yes" : "no")}");
    return 0;
}

if (args.Length < 6)
{
    Console.Error.WriteLine("usage: Gati.MLNet.ModelProbe <model.zip> <idx-folder> <train|test> <rows> <output> <column>...");
    return 2;
}
var context = new MLContext();
var model = context.Model.Load(args[0], out _);
var data = context.Data.TakeRows(context.Data.LoadFashionMnist(args[2] == "train" ? DatasetSplit.Train : DatasetSplit.Test, args[1]), long.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture));
var scored = model.Transform(data);
var columns = args.Skip(5).Select(name => scored.Schema[name]).ToArray();
using var output = new BinaryWriter(File.Create(args[4]));
using var cursor = scored.GetRowCursor(columns);
var writers = columns.Select(column => MakeWriter(cursor, column, output)).ToArray();
while (cursor.MoveNext())
    foreach (var write in writers) write();
Console.WriteLine($"rows {cursor.Position}");
return 0;

static Action MakeWriter(DataViewRowCursor cursor, DataViewSchema.Column column, BinaryWriter output)
{
    switch (column.Type)
    {
        case VectorDataViewType:
        {
            var getter = cursor.GetGetter<VBuffer<float>>(column);
            VBuffer<float> value = default;
            return () =>
            {
                getter(ref value);
                foreach (var v in value.DenseValues()) output.Write(v);
            };
        }
        case KeyDataViewType:
        {
            var getter = cursor.GetGetter<uint>(column);
            uint value = 0;
            return () =>
            {
                getter(ref value);
                output.Write(value);
            };
        }
        case NumberDataViewType when column.Type.RawType == typeof(int):
        {
            var getter = cursor.GetGetter<int>(column);
            int value = 0;
            return () =>
            {
                getter(ref value);
                output.Write(value);
            };
        }
        case BooleanDataViewType:
        {
            var getter = cursor.GetGetter<bool>(column);
            bool value = false;
            return () =>
            {
                getter(ref value);
                output.Write(value);
            };
        }
        default:
        {
            var getter = cursor.GetGetter<float>(column);
            float value = 0;
            return () =>
            {
                getter(ref value);
                output.Write(value);
            };
        }
    }
}

/// <summary>The engine's input type.</summary>
internal sealed class ProbeImage
{
    public float[] Image { get; set; } = [];
}
