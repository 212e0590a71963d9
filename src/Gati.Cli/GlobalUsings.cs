// The namespaces most commands use, imported once for the whole CLI.
global using System.CommandLine;
global using System.Diagnostics;
global using System.Globalization;
global using System.Text;
global using Gati.Cli.Infrastructure;
global using Gati.MLNet;
global using Gati.MLNet.Data;
global using Gati.MLNet.Inference;
global using Gati.MLNet.ModelFormat;
global using Gati.MLNet.Models;
global using Gati.MLNet.Models.Predictors;
global using Gati.MLNet.Torch;
global using Gati.MLNet.Training;
global using Gati.MLNet.Transforms;
global using Microsoft.ML;
global using Microsoft.ML.Data;
global using Spectre.Console;
