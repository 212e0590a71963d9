namespace Gati.Cli.Infrastructure;

/// <summary>
/// The options that shape a benchmark's request streams, shared by <c>bench workload</c> and <c>bench phase-ceiling</c>
/// (each keeps its own --requests and --phase-length, whose defaults differ): the test rows drawn from, the popular
/// classes of a phase, and the drift stream's changed camera.
/// </summary>
internal sealed class StreamArguments
{
    public Option<long?> Rows { get; } = new Option<long?>("--rows") { Description = "Test rows the streams draw from (default: the whole test split)." }.AtLeast(1L);

    public Option<int> Popular { get; } = new Option<int>("--popular") { Description = "Popular classes per phase.", DefaultValueFactory = _ => 3 }.AtLeast(1);

    public Option<double> PopularShare { get; } = new Option<double>("--popular-share") { Description = "Their share of a phase's requests.", DefaultValueFactory = _ => 0.9 }.Share();

    public Option<double> DriftContrast { get; } = new Option<double>("--drift-contrast")
    {
        Description = "Drift stream: contrast the changed camera keeps, in (0, 1].", DefaultValueFactory = _ => 0.5,
    }.Require(v => v is > 0 and <= 1, "must be in (0, 1]");

    public Option<double> DriftNoise { get; } = new Option<double>("--drift-noise")
    {
        Description = "Drift stream: sensor noise, standard deviation as a share of the pixel range.", DefaultValueFactory = _ => 0.05,
    }.Require(v => v is >= 0 and < 1, "must be in [0, 1)");

    public void AddTo(Command command) => command.AddOptions(Rows, Popular, PopularShare, DriftContrast, DriftNoise);
}
