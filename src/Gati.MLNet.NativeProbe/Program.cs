using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Gati.MLNet.Torch;
using TorchSharp;

// Usage: Gati.MLNet.NativeProbe --preload <library path>... --repeats <n> <case>...
// Loads the named native libraries by full path (the parent's libtorch and libLibTorchSharp), runs the numerics
// check on the cases and prints one JSON object per case. Exit code 0 when the check ran, whatever its verdict.
var preload = new List<string>();
var cases = new List<NumericsCase>();
var repeats = 3;
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--preload": preload.Add(args[++i]); break;
        case "--repeats": repeats = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        default: cases.Add(NumericsCase.Parse(args[i])); break;
    }
}
try
{
    foreach (var library in preload) NativeLibrary.Load(library);
    torch.InitializeDeviceType(DeviceType.CPU);
    torch.set_num_threads(Environment.ProcessorCount);
    foreach (var result in NumericsCheck.Run(cases, repeats))
    {
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            @case = result.Case.ToString(),
            error = double.IsFinite(result.WorstRelativeError) ? result.WorstRelativeError : -1,
            output = result.WorstOutput,
        }));
    }
    return 0;
}
catch (Exception ex)
{
    Console.Error.WriteLine($"native probe failed: {ex.GetType().Name}: {ex.Message}");
    return 3;
}
