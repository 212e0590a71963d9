// The gati commands write to Spectre's process-wide AnsiConsole.Console, which CliHost swaps to capture output:
// tests of this assembly must not run in parallel.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
