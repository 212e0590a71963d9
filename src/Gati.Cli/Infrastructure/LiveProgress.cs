namespace Gati.Cli.Infrastructure;

/// <summary>
/// A Spectre.Console progress bar for long work when the console is a terminal; in logs and redirected output
/// (CI, files, tests) the work runs without one and its reporters print plain lines instead.
/// </summary>
internal static class LiveProgress
{
    /// <summary>Runs <paramref name="work"/>, handing it a bar updater (value, description) or null when not interactive.</summary>
    public static T Run<T>(IAnsiConsole console, string description, double maxValue, Func<Action<double, string>?, T> work)
    {
        if (!console.Profile.Capabilities.Interactive || Console.IsOutputRedirected) return work(null);
        T result = default!;
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(context =>
            {
                var task = context.AddTask(description, maxValue: maxValue);
                result = work((value, text) =>
                {
                    task.Value = Math.Min(value, maxValue);
                    task.Description = Markup.Escape(text);
                });
                task.Value = maxValue;
                task.StopTask();
            });
        return result;
    }
}
