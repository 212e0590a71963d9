using Gati.Cli;

ConsoleSetup.Configure();
return await GatiCommand.Create().Parse(args).InvokeAsync();
