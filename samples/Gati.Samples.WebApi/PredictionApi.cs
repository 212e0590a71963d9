using System.Diagnostics;
using Gati.Extensions.ML;
using Gati.MLNet.Inference;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Gati.Samples.WebApi;

/// <summary>The sample's endpoints.</summary>
public static class PredictionApi
{
    /// <summary>Maps POST /predict and GET /model.</summary>
    public static IEndpointRouteBuilder MapPredictionApi(this IEndpointRouteBuilder app)
    {
        // Content types are checked by the handler (not with Accepts metadata, whose automatic 415 carries no explanation).
        app.MapPost("/predict", PredictAsync)
            .Produces<PredictionResponse>()
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status415UnsupportedMediaType)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        app.MapGet("/model", IResult (EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction> pool) =>
        {
            var health = pool.GetHealth();
            ModelStatus status;
            try
            {
                status = pool.GetStatus();
            }
            catch (ModelUnavailableException ex)
            {
                return Unavailable(ex, health);
            }
            return TypedResults.Ok(new
            {
                Model = health.Name, State = health.State.ToString(), health.Reason, status.Path, status.Generation, status.LoadedAt, status.CacheLayers,
                status.Device, status.Backend, status.FailedReloads, status.LastError, health.NextRetryAt, Warnings = status.Warnings ?? [],
                InputShape = status.InputShape.ToString(), status.ClassNames,
            });
        });
        return app;
    }

    internal static async Task<Results<Ok<PredictionResponse>, ProblemHttpResult>> PredictAsync(HttpRequest request,
        EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction> pool, IOptions<ServingOptions> options, DecodingGate decoding, RequestMetrics metrics,
        CancellationToken cancellation)
    {
        var started = Stopwatch.GetTimestamp();
        var limit = options.Value.MaxRequestBytes;
        if (request.ContentLength > limit) return TooLarge(limit);
        var mediaType = request.ContentType?.Split(';')[0].Trim().ToLowerInvariant();
        if (mediaType is not ("image/png" or "image/jpeg" or "application/json"))
            return TypedResults.Problem($"Send an image (Content-Type image/png or image/jpeg) or JSON ({{\"pixels\": [...]}}, application/json); got '{request.ContentType ?? "none"}'.",
                statusCode: StatusCodes.Status415UnsupportedMediaType, title: "Unsupported media type");

        byte[] body;
        try
        {
            body = await ReadBodyAsync(request, limit, cancellation);
        }
        catch (BadHttpRequestException ex)
        {
            return TypedResults.Problem(ex.Message, statusCode: ex.StatusCode, title: "Bad request body");
        }
        if (body.Length > limit) return TooLarge(limit);
        if (body.Length == 0) return BadRequest("The request body is empty.");
        metrics.Read.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);

        // Decoded for, and answered by, one model generation: a hot reload in between cannot pair one model's input size
        // or class names with another's prediction.
        ModelPrediction<EarlyExitPrediction> answer;
        var decodeTime = TimeSpan.Zero;
        try
        {
            var waiting = Stopwatch.GetTimestamp();
            // A decode slot is held from here until the body is decoded (in the callback), never while the request waits
            // for its micro-batch; the using gives it back on the paths where the callback never runs.
            using var slot = await decoding.EnterAsync(cancellation);
            answer = await pool.PredictWithStatusAsync(EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction>.DefaultModelName,
                status =>
                {
                    try
                    {
                        var decodeStart = Stopwatch.GetTimestamp();
                        var input = new ImageInput { Image = RequestDecoder.FromBody(mediaType, body, status.InputShape, status.InputNormalization, Limits(options.Value, status)) };
                        decodeTime = Stopwatch.GetElapsedTime(decodeStart);
                        return input;
                    }
                    finally
                    {
                        slot.Dispose();
                    }
                }, cancellation);
            metrics.Decode.Record(decodeTime.TotalMilliseconds);
            metrics.Predict.Record((Stopwatch.GetElapsedTime(waiting) - decodeTime).TotalMilliseconds);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidDataException)
        {
            return BadRequest(ex.Message);
        }
        catch (ModelUnavailableException ex)
        {
            if (ex.NextRetryAt is { } next)
                request.HttpContext.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling((next - DateTimeOffset.UtcNow).TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            return TypedResults.Problem(ex.Message, statusCode: StatusCodes.Status503ServiceUnavailable, title: "Model unavailable");
        }
        catch (ObjectDisposedException)
        {
            return TypedResults.Problem("The server is shutting down; retry.", statusCode: StatusCodes.Status503ServiceUnavailable, title: "Shutting down");
        }
        var (status, prediction) = answer;
        var scores = new Dictionary<string, float>(status.ClassNames.Count);
        for (var i = 0; i < status.ClassNames.Count; i++) scores[status.ClassNames[i]] = prediction.Score[i];
        return TypedResults.Ok(new PredictionResponse(prediction.PredictedClass, prediction.PredictedLabel, scores, prediction.ExitLayer,
            prediction.ExitedEarly, prediction.LatencyMs));
    }

    /// <summary>503 with the reason the model is not loaded, when the next attempt runs, and a Retry-After header.</summary>
    private static IResult Unavailable(ModelUnavailableException ex, ModelHealth health)
    {
        var extensions = new Dictionary<string, object?> { ["model"] = health.Name, ["failedLoads"] = health.FailedLoads, ["nextRetryAt"] = health.NextRetryAt };
        return TypedResults.Problem(ex.Message, statusCode: StatusCodes.Status503ServiceUnavailable, title: "Model unavailable", extensions: extensions);
    }

    /// <summary>The image limits for the model generation that decodes: Gati:MaxImagePixels, or the model's own.</summary>
    private static ImageDecodingLimits Limits(ServingOptions options, ModelStatus status) =>
        (options.MaxImagePixels > 0 ? new ImageDecodingLimits { MaxPixels = options.MaxImagePixels } : ImageDecodingLimits.ForInput(status.InputShape))
        with { MaxPixelsSetting = "Gati:MaxImagePixels" };

    private static ProblemHttpResult BadRequest(string detail) =>
        TypedResults.Problem(detail, statusCode: StatusCodes.Status400BadRequest, title: "Invalid input");

    private static ProblemHttpResult TooLarge(long limit) =>
        TypedResults.Problem($"The request body is larger than {limit} bytes.", statusCode: StatusCodes.Status413PayloadTooLarge, title: "Payload too large");

    /// <summary>Reads at most limit + 1 bytes (one more than allowed tells that the body is too large).</summary>
    private static async Task<byte[]> ReadBodyAsync(HttpRequest request, long limit, CancellationToken cancellation)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await request.Body.ReadAsync(chunk, cancellation)) > 0)
        {
            buffer.Write(chunk, 0, read);
            if (buffer.Length > limit) break;
        }
        return buffer.ToArray();
    }
}
