using System.Diagnostics.Metrics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Gati.Extensions.ML;

/// <summary>Registers an <see cref="EarlyExitPredictionEnginePool{TInput, TOutput}"/>.</summary>
public static class ServiceCollectionExtensions
{
    /// <summary>
    /// Adds a singleton pool for <typeparamref name="TInput"/> → <typeparamref name="TOutput"/>; register its models on
    /// the returned builder: <c>services.AddEarlyExitPredictionEnginePool&lt;In, Out&gt;().FromFile("model.zip", watchForChanges: true)</c>.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Optional settings (device, batching, precision target, reload behaviour).</param>
    public static EarlyExitPredictionEnginePoolBuilder<TInput, TOutput> AddEarlyExitPredictionEnginePool<TInput, TOutput>(
        this IServiceCollection services, Action<EarlyExitPoolOptions>? configure = null)
        where TInput : class
        where TOutput : class, new()
    {
        ArgumentNullException.ThrowIfNull(services);
        var name = PoolRegistrations<TInput, TOutput>.OptionsName;
        services.AddOptions<EarlyExitPoolOptions>(name);
        if (configure is not null) services.Configure(name, configure);
        services.AddOptions<PoolRegistrations<TInput, TOutput>>();
        services.TryAddSingleton(sp => new EarlyExitPredictionEnginePool<TInput, TOutput>(
            sp.GetRequiredService<IOptionsMonitor<EarlyExitPoolOptions>>(),
            sp.GetRequiredService<IOptions<PoolRegistrations<TInput, TOutput>>>().Value,
            new ServingMetrics(sp.GetService<IMeterFactory>()),
            sp.GetService<ILoggerFactory>(),
            sp.GetService<TimeProvider>()));
        return new EarlyExitPredictionEnginePoolBuilder<TInput, TOutput>(services);
    }
}

/// <summary>Registers models with a pool.</summary>
public sealed class EarlyExitPredictionEnginePoolBuilder<TInput, TOutput>
    where TInput : class
    where TOutput : class, new()
{
    internal EarlyExitPredictionEnginePoolBuilder(IServiceCollection services) => Services = services;

    /// <summary>The service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>The default model, from a file.</summary>
    /// <param name="path">A model zip with learned caches (gati optimize) or a base model.</param>
    /// <param name="watchForChanges">Reload when the file changes.</param>
    public EarlyExitPredictionEnginePoolBuilder<TInput, TOutput> FromFile(string path, bool watchForChanges = false) =>
        FromFile(EarlyExitPredictionEnginePool<TInput, TOutput>.DefaultModelName, path, watchForChanges);

    /// <summary>A named model, from a file.</summary>
    /// <param name="modelName">Its name in <c>Predict(modelName, input)</c>.</param>
    /// <param name="path">A model zip with learned caches (gati optimize) or a base model.</param>
    /// <param name="watchForChanges">Reload when the file changes.</param>
    public EarlyExitPredictionEnginePoolBuilder<TInput, TOutput> FromFile(string modelName, string path, bool watchForChanges)
    {
        ArgumentNullException.ThrowIfNull(modelName);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        Services.Configure<PoolRegistrations<TInput, TOutput>>(r => r.Models.Add(new ModelRegistration(modelName, path, watchForChanges)));
        return this;
    }

    /// <summary>Binds the pool's settings from configuration (e.g. <c>builder.Configuration.GetSection("Gati:Pool")</c>).</summary>
    public EarlyExitPredictionEnginePoolBuilder<TInput, TOutput> Configure(IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(section);
        Services.Configure<EarlyExitPoolOptions>(PoolRegistrations<TInput, TOutput>.OptionsName, section);
        return this;
    }
}
