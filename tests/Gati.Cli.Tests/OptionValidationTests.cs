using Gati.MLNet.Tests.Infrastructure;

namespace Gati.Cli.Tests;

/// <summary>
/// Every command rejects a bad option value before it prints or does anything, with a message that names the
/// option (not a library parameter such as 'count').
/// </summary>
public sealed class OptionValidationTests
{
    // Lines that commands print once they start working; none may appear before a rejection.
    private static readonly string[] StartLines =
        ["Training ", "Checkpoint:", "Base model ", "Features:", "Measuring ", "Early exit with", "Reusing ", "== 1.", "ResNet-18 width", "Accuracy:", "Machine:"];

    public static TheoryData<string, string> InvalidValues()
    {
        // {model} is a model path that does not exist: a valid value would fail later on it, naming no option.
        var data = new TheoryData<string, string>();
        void Add(string option, params string[] commandLines)
        {
            foreach (var line in commandLines) data.Add(line, option);
        }

        Add("--train-rows", "train-base -o {out} --train-rows -5", "train-base -o {out} --train-rows 0",
            "train-predictors -b {model} -o {out} --train-rows -1", "fit-caches -b {model} -o {out} --train-rows 0");
        Add("--test-rows", "train-base -o {out} --test-rows 0");
        Add("--epochs", "train-base -o {out} --epochs 0", "train-predictors -b {model} -o {out} --epochs 0", "fit-caches -b {model} -o {out} --epochs -2");
        Add("--width", "train-base -o {out} --width 0", "train-base -o {out} --width 2000", "demo -o {dir} --width 0");
        Add("--lr", "train-base -o {out} --lr 0", "train-base -o {out} --lr NaN", "train-predictors -b {model} -o {out} --lr -1", "fit-caches -b {model} -o {out} --lr 0");
        Add("--batch-size", "train-base -o {out} --batch-size 0", "train-predictors -b {model} -o {out} --batch-size 0", "optimize -m {model} -o {out} --batch-size 0");
        Add("--momentum", "train-base -o {out} --momentum 1");
        Add("--weight-decay", "train-base -o {out} --weight-decay -1");
        Add("--crop-padding", "train-base -o {out} --crop-padding -1");
        Add("--arch", "train-base -o {out} --arch resnet19");
        Add("--threads", "train-base -o {out} --threads 0", "evaluate -m {model} --threads -1");
        Add("--rows", "evaluate -m {model} --rows 0", "evaluate-early-exit -m {model} --rows -1", "report predictors -m {model} -o {dir} --rows 0",
            "bench engine -m {model} --rows 0", "bench base --rows 0");
        Add("--layers", "train-predictors -b {model} -o {out} --layers 0-3", "fit-caches -b {model} -o {out} --layers x");
        Add("--architectures", "train-predictors -b {model} -o {out} --architectures fc:0", "fit-caches -b {model} -o {out} --architectures tree");
        Add("--fc-hidden", "train-predictors -b {model} -o {out} --fc-hidden 0");
        Add("--pool-size", "train-predictors -b {model} -o {out} --pool-size 0");
        Add("--pool-hidden", "train-predictors -b {model} -o {out} --pool-hidden -1");
        Add("--conv-kernel", "train-predictors -b {model} -o {out} --conv-kernel 0");
        Add("--conv-stride", "train-predictors -b {model} -o {out} --conv-stride 0");
        Add("--max-dump-gb", "train-predictors -b {model} -o {out} --max-dump-gb -1");
        Add("--holdout-rows", "train-predictors -b {model} -o {out} --holdout-rows 1", "fit-caches -b {model} -o {out} --holdout-rows 0",
            "optimize -m {model} -o {out} --holdout-rows -5", "demo -o {dir} --holdout-rows 1");
        Add("--patience", "train-predictors -b {model} -o {out} --patience 0", "fit-caches -b {model} -o {out} --patience 0");
        Add("--lr-halving", "train-predictors -b {model} -o {out} --lr-halving 0");
        Add("--input-step-bound", "train-predictors -b {model} -o {out} --input-step-bound -1", "train-predictors -b {model} -o {out} --input-step-bound NaN");
        Add("--alpha", "train-predictors -b {model} -o {out} --alpha 1.5");
        Add("--temperature", "train-predictors -b {model} -o {out} --temperature 0");
        Add("--cost-layer", "report predictors -m {model} -o {dir} --cost-layer 0");
        Add("--latency-runs", "report predictors -m {model} -o {dir} --latency-runs 0");
        Add("--selector", "fit-caches -b {model} -o {out} --selector tree");
        Add("--target-precision", "fit-caches -b {model} -o {out} --target-precision 0", "demo -o {dir} --target-precision 1.5");
        Add("--selector-epochs", "fit-caches -b {model} -o {out} --selector-epochs 0");
        Add("--agreement-target", "optimize -m {model} -o {out} --agreement-target 1.01", "demo -o {dir} --agreement-target 0");
        Add("--memory-budget-mb", "optimize -m {model} -o {out} --memory-budget-mb 0");
        Add("--timing-runs", "optimize -m {model} -o {out} --timing-runs 0");
        Add("--precision-targets", "optimize -m {model} -o {out} --precision-targets 1.5", "optimize -m {model} -o {out} --precision-targets 0.99,x");
        Add("--batch-sizes", "evaluate-early-exit -m {model} --batch-sizes 1,0", "bench engine -m {model} --batch-sizes x");
        Add("--rounds", "bench engine -m {model} --rounds 0");
        Add("--images-per-round", "bench engine -m {model} --images-per-round 0");
        Add("--ort-threads", "bench engine -m {model} --ort-threads 0", "evaluate-early-exit -m {model} --ort-threads -1", "optimize -m {model} -o {out} --ort-threads 0");
        Add("--backend", "evaluate-early-exit -m {model} --backend tensorflow", "demo -o {dir} --backend both");
        Add("--memory-predictions", "bench engine -m {model} --memory-predictions -1");
        Add("--widths", "bench base --widths 16 0");
        Add("--train-steps", "bench base --train-steps 0");
        Add("--repeats", "bench base --repeats 0");
        Add("--base-train-rows", "demo -o {dir} --base-train-rows 0");
        Add("--base-epochs", "demo -o {dir} --base-epochs 0");
        Add("--cache-layers", "demo -o {dir} --cache-layers 9-2");
        Add("--cache-architectures", "demo -o {dir} --cache-architectures pool:0");
        Add("--cache-train-rows", "demo -o {dir} --cache-train-rows 0");
        Add("--cache-epochs", "demo -o {dir} --cache-epochs 0");
        Add("--eval-rows", "demo -o {dir} --eval-rows 0");
        Add("--max-image-pixels", "predict -m {model} x.png --max-image-pixels 0");
        Add("--ort-single-graph-threads", "predict -m {model} --folder {dir} --ort-single-graph-threads 0");
        return data;
    }

    [Theory]
    [MemberData(nameof(InvalidValues))]
    public void Command_InvalidOptionValue_FailsNamingTheOptionBeforeDoingAnything(string commandLine, string option)
    {
        using var temp = new TempDirectory();
        var args = commandLine.Split(' ')
            .Select(a => a.Replace("{out}", temp.File("out.zip"), StringComparison.Ordinal)
                .Replace("{model}", temp.File("model.zip"), StringComparison.Ordinal)
                .Replace("{dir}", temp.Sub("out"), StringComparison.Ordinal))
            .Concat(["--device", "cpu"]);
        if (!commandLine.StartsWith("bench base", StringComparison.Ordinal) && !commandLine.StartsWith("demo", StringComparison.Ordinal)
            && !commandLine.StartsWith("predict", StringComparison.Ordinal))
            args = args.Concat(["--data-dir", RealData.FashionMnistDirectory]);

        var (exit, output) = CliHost.Invoke([.. args]);

        Assert.Equal(1, exit);
        // Help text (printed with parse errors) is indented; the error lines are not.
        var errors = output.Split('\n').Where(l => l.Length > 0 && !char.IsWhiteSpace(l[0]) && !l.EndsWith(':')).ToArray();
        Assert.NotEmpty(errors);
        Assert.True(errors.Any(l => l.Contains(option, StringComparison.Ordinal)), output);
        Assert.DoesNotContain("(Parameter '", output);
        Assert.DoesNotContain("not found", output);
        foreach (var line in StartLines) Assert.DoesNotContain(errors, l => l.StartsWith(line, StringComparison.Ordinal));
        Assert.False(File.Exists(temp.File("out.zip")));
    }

    [Fact]
    public void Describe_LibraryParameterMatchingAnOption_NamesTheOption()
    {
        var message = Infrastructure.CommandErrors.Describe(new ArgumentOutOfRangeException("BatchSize", 0, "Batch size must be positive."));
        Assert.Equal("--batch-size: Batch size must be positive. (got 0)", message);
    }

    [Fact]
    public void Describe_InternalParameter_IsLeftOut()
    {
        var message = Infrastructure.CommandErrors.Describe(new ArgumentOutOfRangeException("count", -1, "Must be greater than zero."));
        Assert.Equal("Must be greater than zero. (got -1)", message);
    }

    [Fact]
    public void FitCaches_BaseAndPredictorsModelTogether_IsRejectedBeforeLoadingEither()
    {
        using var temp = new TempDirectory();
        var (exit, output) = CliHost.Invoke("fit-caches", "-b", temp.File("a.zip"), "--predictors-model", temp.File("b.zip"), "-o", temp.File("c.zip"), "--device", "cpu");
        Assert.Equal(1, exit);
        Assert.Contains("exactly one of --base-model", output);
        Assert.DoesNotContain("not found", output);
    }
}
