using Gati.Cli;
using Gati.Cli.Infrastructure;

ConsoleSetup.Configure();
return await GatiCommand.Create().Parse(args).InvokeAsync();
