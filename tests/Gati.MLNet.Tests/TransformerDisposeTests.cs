using Gati.MLNet.Inference;
using Gati.MLNet.Inference.Backends;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;

namespace Gati.MLNet.Tests;

/// <summary>
/// Disposing a model while another thread is inside a forward pass (a Transform cursor) must not free the native
/// network under that pass: disposal waits for it, and a pass that starts afterwards gets an ObjectDisposedException.
/// Each component's forward pass holds its network's lock, so a test thread that holds the lock is a pass in progress
/// that it controls: no timing decides what these tests see.
/// </summary>
public sealed class TransformerDisposeTests(UntrainedModelZip zip) : IClassFixture<UntrainedModelZip>
{
    private static readonly TimeSpan HangGuard = TimeSpan.FromMinutes(1);

    private sealed class PixelRow
    {
        [VectorType(1, 28, 28)]
        public float[] Pixels { get; set; } = [];
    }

    /// <summary>The loaded model, the output column computed by the component under test, and that component's network.</summary>
    private (ITransformer Model, IDataView Input, string Column, object Gate, torch.Tensor Weight) Load(string component)
    {
        var ml = new MLContext(0);
        var model = ml.Gati().LoadModel(zip.Path, out _);
        var parts = ((IEnumerable<ITransformer>)model).ToArray();
        var resnet = parts.OfType<ResNetTransformer>().Single();
        var predictor = parts.OfType<PredictorTransformer>().Single();
        var caches = parts.OfType<LearnedCachesTransformer>().Single();
        var (column, network) = component switch
        {
            "resnet" => (resnet.ScoreColumnName, (object)caches.BaseNetwork),
            "extractor" => (parts.OfType<FeatureExtractingTransformer>().Single().LogitsColumnName, caches.BaseNetwork),
            "predictor" => (predictor.ScoreColumnName, caches.Caches[0].Predictor),
            "selector" => (parts.OfType<SelectorTransformer>().Single().ExitColumnName, caches.Caches[0].Selector),
            "caches" => (caches.OutputColumns.ExitLayer, caches.BaseNetwork),
            _ => throw new ArgumentOutOfRangeException(nameof(component)),
        };
        var (gate, weight) = network switch
        {
            SharedModule<Models.ResNet> m => (m.Gate, m.Module.parameters().First()),
            SharedModule<Models.Predictors.PredictorNetwork> m => (m.Gate, m.Module.parameters().First()),
            SharedModule<Models.Selectors.SelectorNetwork> m => (m.Gate, m.Module.parameters().First()),
            _ => throw new InvalidOperationException(),
        };
        var input = ml.Data.LoadFromEnumerable([new PixelRow { Pixels = Enumerable.Range(0, 784).Select(i => i % 255 / 255f).ToArray() }]);
        return (model, input, column, gate, weight);
    }

    /// <summary>Reads the component's output column for the first row: one forward pass of it.</summary>
    private static void Forward(ITransformer model, IDataView input, string column)
    {
        var scored = model.Transform(input);
        using var cursor = scored.GetRowCursor([scored.Schema[column]]);
        cursor.MoveNext();
    }

    private static void DisposeAll(ITransformer model)
    {
        foreach (var part in (IEnumerable<ITransformer>)model) (part as IDisposable)?.Dispose();
    }

    /// <summary>Waits until <paramref name="thread"/> has ended or blocks (on the network's lock).</summary>
    private static void WaitUntilEndedOrBlocked(Thread thread)
    {
        var deadline = DateTime.UtcNow + HangGuard;
        while (thread.IsAlive && (thread.ThreadState & ThreadState.WaitSleepJoin) == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "hang guard: the thread neither ended nor blocked");
            Thread.Yield();
        }
    }

    [Theory]
    [InlineData("resnet")]
    [InlineData("extractor")]
    [InlineData("predictor")]
    [InlineData("selector")]
    [InlineData("caches")]
    public void Dispose_WhileAForwardPassRuns_FreesTheNetworkOnlyAfterThePass(string component)
    {
        var (model, input, column, gate, weight) = Load(component);
        Forward(model, input, column);
        Thread disposer;
        lock (gate)
        {
            // This thread is now a forward pass in progress; the model is disposed under it.
            disposer = new Thread(() => DisposeAll(model));
            disposer.Start();
            WaitUntilEndedOrBlocked(disposer);
            Assert.False(weight.IsInvalid, "the network was freed while a forward pass held it");
        }
        Assert.True(disposer.Join(HangGuard), "hang guard: disposal did not finish after the pass");
        Assert.True(weight.IsInvalid, "the network was not freed once the pass ended");
        Assert.Throws<ObjectDisposedException>(() => Forward(model, input, column));
    }

    [Theory]
    [InlineData("resnet")]
    [InlineData("predictor")]
    [InlineData("selector")]
    [InlineData("caches")]
    public void Dispose_WhileAPassWaitsForTheNetwork_ThePassRunsOrGetsObjectDisposed(string component)
    {
        var (model, input, column, gate, _) = Load(component);
        Exception? passError = null;
        Thread pass, disposer;
        lock (gate)
        {
            // A second pass has been admitted (the model was not yet disposed) and waits for the network.
            pass = new Thread(() =>
            {
                try
                {
                    Forward(model, input, column);
                }
                catch (Exception ex)
                {
                    passError = ex;
                }
            });
            pass.Start();
            WaitUntilEndedOrBlocked(pass);
            disposer = new Thread(() => DisposeAll(model));
            disposer.Start();
            WaitUntilEndedOrBlocked(disposer);
        }
        Assert.True(pass.Join(HangGuard) && disposer.Join(HangGuard), "hang guard");
        // Whichever took the lock first: the pass ran on a live network, or it was refused; never a freed network.
        Assert.True(passError is null or ObjectDisposedException, $"the waiting pass failed with {passError}");
    }

    /// <summary>An ONNX Runtime backend whose calls stop after their first segment until released: a call in progress that the test controls.</summary>
    private sealed class PausingBackend(IEarlyExitBackend inner) : IEarlyExitBackend
    {
        public ManualResetEventSlim Paused { get; } = new();

        public ManualResetEventSlim Resume { get; } = new();

        public bool InnerDisposed { get; private set; }

        public string Description => inner.Description;

        public string Device => inner.Device;

        public IEarlyExitCall Begin(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds) =>
            new Call(inner.Begin(segment, inputs, count, thresholds), this);

        // Segment by segment, so that every segment's rows are seen.
        public bool TryRunOne(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit)
        {
            exit = -1;
            return false;
        }

        public SingleGraphTaps? TryRunOneTapped(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit)
        {
            exit = -1;
            return null;
        }

        public bool PrepareTapped() => false;

        public void Dispose()
        {
            InnerDisposed = true;
            inner.Dispose();
        }

        private sealed class Call(IEarlyExitCall call, PausingBackend owner) : IEarlyExitCall
        {
            public SegmentResult Run(int segment)
            {
                var result = call.Run(segment);
                if (segment == 0)
                {
                    // The first session has run and the call holds its outputs; the next segment still needs the sessions.
                    owner.Paused.Set();
                    Assert.True(owner.Resume.Wait(HangGuard), "hang guard");
                }
                return result;
            }

            public void Keep(ReadOnlySpan<int> rows) => call.Keep(rows);

            public ReadOnlySpan<float> Activation(int segment) => call.Activation(segment);

            public void Dispose() => call.Dispose();
        }
    }

    [Fact]
    public void EngineDispose_WhileAnOnnxRuntimeCallRuns_KeepsTheSessionsUntilTheCallEnds()
    {
        var ml = new MLContext(0);
        var model = ml.Gati().LoadModel(zip.Path, out _);
        var caches = ((IEnumerable<ITransformer>)model).OfType<LearnedCachesTransformer>().Single();
        var backend = new PausingBackend(OnnxRuntimeBackend.Create(caches.BaseModel, caches.Caches, new EarlyExitEngineOptions { Device = "cpu" }));
        var engine = new EarlyExitEngine(caches.BaseModel.Acquire(), backend, caches.Caches.Select(c => c.Share()).ToArray(), ExecutionBackend.OnnxRuntime);
        var image = Enumerable.Range(0, 784).Select(i => i % 255 / 255f).ToArray();

        EarlyExitBatch? answer = null;
        var call = new Thread(() => answer = engine.Run(image, 1));
        call.Start();
        Assert.True(backend.Paused.Wait(HangGuard), "hang guard");
        var disposer = new Thread(engine.Dispose);
        disposer.Start();
        WaitUntilEndedOrBlocked(disposer);
        Assert.False(backend.InnerDisposed, "the sessions were disposed under a running call");
        backend.Resume.Set();
        Assert.True(call.Join(HangGuard) && disposer.Join(HangGuard), "hang guard");
        Assert.True(backend.InnerDisposed);
        Assert.NotNull(answer);
        Assert.Single(answer.ExitLayer);
        Assert.Throws<ObjectDisposedException>(() => engine.Run(image, 1));
        DisposeAll(model);
    }
}
