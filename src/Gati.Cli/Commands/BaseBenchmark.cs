using TorchSharp;
using static TorchSharp.torch;

namespace Gati.Cli.Commands;

internal sealed record BaseBenchmarkSettings(int[] Widths, int TrainSteps, int Repeats, int Rows, string? DataDir, string Device, string? Output);

/// <summary>
/// Measures the base model: SGD steps (batch 128) and eval forward passes at batch 1 and 64 on random inputs,
/// and the ML.NET transformer path (<c>model.Transform</c> over the Fashion-MNIST test view, reading Score)
/// against a plain TorchSharp loop over the same images held in memory. Each figure is the median of the repeats.
/// </summary>
internal sealed class BaseBenchmark(IAnsiConsole console)
{
    public int Run(BaseBenchmarkSettings settings)
    {
        var device = DeviceOptions.Resolve(settings.Device);
        var shape = new TensorShape(1, 28, 28);
        var report = new StringBuilder();
        report.AppendLine(CultureInfo.InvariantCulture, $"Machine: {Environment.ProcessorCount} logical CPUs, libtorch threads {torch.get_num_threads()}, device {device}, {RuntimeDescription()}");
        report.AppendLine();
        report.AppendLine("| model | train img/s (batch 128) | infer img/s batch 1 | infer img/s batch 64 |");
        report.AppendLine("|---|---|---|---|");
        foreach (var width in settings.Widths)
        {
            torch.manual_seed(0);
            using var net = new ResNet(new ResNetConfig(ResNetArchitecture.ResNet18, shape, 10, width));
            net.to(device);
            var train = TrainImagesPerSecond(net, device, shape, settings.TrainSteps);
            var batch1 = InferImagesPerSecond(net, device, shape, 1, Math.Max(20, settings.Repeats * 10), settings.Repeats);
            var batch64 = InferImagesPerSecond(net, device, shape, 64, 5, settings.Repeats);
            var line = $"| ResNet-18 w{width} | {train:F0} | {batch1:F0} | {batch64:F0} |";
            report.AppendLine(line);
            console.MarkupLineInterpolated($"ResNet-18 width {width}: train {train:F0} img/s, infer batch 1 {batch1:F0} img/s, batch 64 {batch64:F0} img/s");
        }

        report.AppendLine();
        report.AppendLine("| path (ResNet-18 w16, batch 64, Fashion-MNIST test) | img/s | relative |");
        report.AppendLine("|---|---|---|");
        var (transformer, loop) = TransformerVersusLoop(settings, device, shape);
        report.AppendLine(CultureInfo.InvariantCulture, $"| plain TorchSharp loop (images preloaded) | {loop:F0} | 100% |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| ML.NET transformer (model.Transform, streaming IDX reader) | {transformer:F0} | {transformer / loop:P1} |");
        console.MarkupLineInterpolated($"ML.NET transformer path {transformer:F0} img/s vs plain loop {loop:F0} img/s: {transformer / loop:P1}");
        if (settings.Output is { } output) AtomicFile.WriteAllText(output, report.ToString());
        console.WriteLine();
        console.WriteLine(report.ToString());
        return 0;
    }

    private static string RuntimeDescription() =>
        $".NET {Environment.Version}, TorchSharp {typeof(torch).Assembly.GetName().Version}, {TorchRuntime.Kind}";

    private static double TrainImagesPerSecond(ResNet net, Device device, TensorShape shape, int steps)
    {
        const int batch = 128;
        net.train();
        using var optimizer = new SafeSgd(net.parameters(), 0.01, 0.9, weightDecay: 5e-4);
        using var x = torch.randn(shape.WithBatch(batch), device: device);
        using var y = torch.randint(0, 10, [batch], device: device);
        void Step()
        {
            using var scope = NewDisposeScope();
            var loss = nn.functional.cross_entropy(net.forward(x), y);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
        }
        Step(); // warm-up
        Synchronize(device);
        var times = new List<double>();
        for (var i = 0; i < steps; i++)
        {
            var clock = Stopwatch.StartNew();
            Step();
            Synchronize(device);
            times.Add(clock.Elapsed.TotalSeconds);
        }
        return batch / Median(times);
    }

    private static double InferImagesPerSecond(ResNet net, Device device, TensorShape shape, int batch, int iterations, int repeats)
    {
        net.eval();
        using var noGrad = no_grad();
        using var x = torch.randn(shape.WithBatch(batch), device: device);
        void Pass()
        {
            using var scope = NewDisposeScope();
            net.forward(x).cpu();
        }
        for (var i = 0; i < 3; i++) Pass();
        var times = new List<double>();
        for (var r = 0; r < repeats; r++)
        {
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < iterations; i++) Pass();
            Synchronize(device);
            times.Add(clock.Elapsed.TotalSeconds / iterations);
        }
        return batch / Median(times);
    }

    private (double Transformer, double Loop) TransformerVersusLoop(BaseBenchmarkSettings settings, Device device, TensorShape shape)
    {
        var context = new MLContext(seed: 0);
        var data = context.Data.TakeRows(context.Data.LoadFashionMnist(DatasetSplit.Test, settings.DataDir), settings.Rows);
        // A width-16 ResNet-18 fitted for one tiny epoch: the weights do not matter for speed, the path does.
        using var model = context.Gati().ResNet(new ResNetTrainer.Options
        {
            BaseWidth = 16, Epochs = 1, BatchSize = 64, Device = settings.Device, InferenceBatchSize = 64, Seed = 0,
        }).Fit(context.Data.TakeRows(data, 64));

        // The same images, preloaded into one managed array, for the plain loop.
        var images = new float[settings.Rows * shape.Size];
        var row = 0;
        using (var cursor = data.GetRowCursor([data.Schema["Image"]]))
        {
            var getter = cursor.GetGetter<VBuffer<float>>(data.Schema["Image"]);
            VBuffer<float> value = default;
            while (cursor.MoveNext())
            {
                getter(ref value);
                value.GetValues().CopyTo(images.AsSpan(row++ * shape.Size, shape.Size));
            }
        }
        var count = row;
        var probabilities = new float[64 * 10];

        double TransformerPass()
        {
            var clock = Stopwatch.StartNew();
            var scored = model.Transform(data);
            using var cursor = scored.GetRowCursor([scored.Schema["Score"]]);
            var getter = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
            VBuffer<float> score = default;
            while (cursor.MoveNext()) getter(ref score);
            return count / clock.Elapsed.TotalSeconds;
        }

        double LoopPass()
        {
            var clock = Stopwatch.StartNew();
            using var noGrad = no_grad();
            for (var start = 0; start < count; start += 64)
            {
                var n = Math.Min(64, count - start);
                using var scope = NewDisposeScope();
                var x = tensor(images.AsSpan(start * shape.Size, n * shape.Size).ToArray(), shape.WithBatch(n)).to(device);
                var p = nn.functional.softmax(model.Network.forward(x), 1).cpu();
                p.data<float>().CopyTo(probabilities.AsSpan(0, n * 10), 0, 0);
            }
            return count / clock.Elapsed.TotalSeconds;
        }

        TransformerPass();
        LoopPass();
        var transformerRuns = new List<double>();
        var loopRuns = new List<double>();
        for (var r = 0; r < settings.Repeats; r++)
        {
            // Interleaved so that both paths see the same machine conditions.
            transformerRuns.Add(TransformerPass());
            loopRuns.Add(LoopPass());
        }
        return (Median(transformerRuns), Median(loopRuns));
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) torch.cuda.synchronize(device);
    }
}
