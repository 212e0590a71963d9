using System.Diagnostics.Metrics;

namespace Gati.Extensions.ML.Tests.Infrastructure;

/// <summary>
/// Makes meters scoped to itself: test classes run in parallel and every pool's meter has the same name, so a listener
/// tells this provider's measurements apart by <see cref="Meter.Scope"/>.
/// </summary>
internal sealed class ScopedMeterFactory : IMeterFactory
{
    public Meter Create(MeterOptions options)
    {
        options.Scope = this;
        return new Meter(options);
    }

    public void Dispose()
    {
    }
}
