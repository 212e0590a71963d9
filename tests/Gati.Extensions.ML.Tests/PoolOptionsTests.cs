using Gati.MLNet.Inference;
using Microsoft.Extensions.Configuration;

namespace Gati.Extensions.ML.Tests;

public sealed class PoolOptionsTests
{
    private static EarlyExitPoolOptions Bind(Dictionary<string, string?> settings) =>
        new ConfigurationBuilder().AddInMemoryCollection(settings).Build().GetSection("Gati:Pool").Get<EarlyExitPoolOptions>()!;

    [Fact]
    public void Bind_EngineSection_SetsTheEngineOptionsEachModelGets()
    {
        var options = Bind(new()
        {
            ["Gati:Pool:Device"] = "cpu",
            ["Gati:Pool:Engine:SingleGraphThreads"] = "2",
            ["Gati:Pool:Engine:AllowSpinning"] = "true",
            ["Gati:Pool:Engine:SingleGraphAtBatchOne"] = "false",
            ["Gati:Pool:Engine:IntraOpThreads"] = "3",
        });
        options.Validate();
        var engine = options.EngineOptions();
        Assert.Equal(("cpu", 2, true, false, 3), (engine.Device, engine.SingleGraphThreads, engine.AllowSpinning, engine.SingleGraphAtBatchOne, engine.IntraOpThreads));
        // Each model's engine gets its own copy: a later change of the pool's options reaches the next load only.
        Assert.NotSame(options.Engine, engine);
        options.Engine.SingleGraphThreads = 1;
        Assert.Equal(2, engine.SingleGraphThreads);
    }

    [Fact]
    public void Bind_SpellingsFromBeforeTheEngineSection_StillApply()
    {
        var options = Bind(new()
        {
            ["Gati:Pool:Backend"] = "TorchSharp",
            ["Gati:Pool:SingleGraphThreads"] = "2",
            ["Gati:Pool:SingleGraphAtBatchOne"] = "false",
        });
        Assert.Equal((ExecutionBackend.TorchSharp, 2, false), (options.Engine.Backend, options.Engine.SingleGraphThreads, options.Engine.SingleGraphAtBatchOne));
    }

    [Fact]
    public void Validate_BadEngineSetting_NamesIt()
    {
        var options = Bind(new() { ["Gati:Pool:Engine:SingleGraphThreads"] = "0" });
        var error = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);
        Assert.Equal("SingleGraphThreads", error.ParamName);
        options = new EarlyExitPoolOptions { Engine = null! };
        Assert.Contains("Engine", Assert.Throws<ArgumentNullException>(options.Validate).Message);
    }
}
