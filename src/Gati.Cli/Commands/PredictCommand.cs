namespace Gati.Cli.Commands;

/// <summary><c>gati predict</c>: images (files or a folder) through a model's early exit, one line per image.</summary>
internal static class PredictCommand
{
    public static Command Create()
    {
        var runtime = new RuntimeArguments();
        var serving = new ServingArguments();
        var model = new Option<string>("--model", "-m")
        {
            Description = "Model zip with learned caches (gati demo, optimize, fit-caches) or a base model alone (then the full model answers).",
            Required = true,
        };
        var images = new Argument<string[]>("images") { Description = "PNG or JPEG files to predict.", Arity = ArgumentArity.ZeroOrMore };
        var folder = new Option<string?>("--folder") { Description = "Also predict every .png, .jpg and .jpeg file in this folder and its sub-folders, in path order." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object per image (JSON Lines), and nothing else, instead of text." };
        var maxPixels = new Option<long?>("--max-image-pixels")
        {
            Description = "Largest image decoded, in pixels (width x height from its header; default: the larger of 2048 x 2048 and 64 times the model's input).",
        }.AtLeast(1L);
        var command = new Command("predict",
            "Predict images with a model: class, exit layer (0 = the full model) and latency per image, decoded exactly as the web sample decodes uploads.");
        command.Arguments.Add(images);
        command.Options.Add(model);
        command.AddOptions(folder, json, maxPixels);
        runtime.AddTo(command);
        serving.AddTo(command);
        command.Validators.Add(result =>
        {
            if (result.GetValue(images) is not { Length: > 0 } && result.GetValue(folder) is null)
                result.AddError("Name image files, or a folder with --folder.");
        });
        command.SetRun((result, cancellation) =>
        {
            var files = ImagePrediction.Files(result.GetValue(images) ?? [], result.GetValue(folder));
            runtime.Apply(result);
            var device = result.GetValue(runtime.Device)!;
            return new ImagePrediction(AnsiConsole.Console).Run(new ImagePredictionSettings(result.GetValue(model)!, files, result.GetValue(json),
                result.GetValue(maxPixels), device, serving.Read(result, device)[0]), cancellation);
        });
        return command;
    }
}
