using Gati.Cli;

return await GatiCommand.Create().Parse(args).InvokeAsync();
