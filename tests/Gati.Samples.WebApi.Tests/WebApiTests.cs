using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Gati.Extensions.ML;
using Gati.Extensions.ML.Tests.Infrastructure;
using Gati.MLNet;
using Gati.MLNet.Inference;
using Gati.MLNet.Tests.Infrastructure;
using Gati.Samples.LoadTest;
using Gati.Samples.WebApi;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Gati.Samples.WebApi.Tests;

/// <summary>The sample through WebApplicationFactory, serving a real early-exit model.</summary>
public sealed class WebApiTests(ServingModels models) : IClassFixture<ServingModels>
{
    private WebApplicationFactory<Program> Factory(string? modelPath = null, long maxBytes = 1 << 20) =>
        new WebApplicationFactory<Program>().WithWebHostBuilder(host =>
        {
            host.UseSetting("Gati:ModelPath", modelPath ?? models.First);
            host.UseSetting("Gati:WatchForChanges", "false");
            host.UseSetting("Gati:MaxRequestBytes", maxBytes.ToString(System.Globalization.CultureInfo.InvariantCulture));
            host.UseSetting("Gati:Pool:Device", "cpu");
            host.UseSetting("Gati:DrainSeconds", "0");
        });

    private static ByteArrayContent Body(byte[] bytes, string? contentType)
    {
        var content = new ByteArrayContent(bytes);
        if (contentType is not null) content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        return content;
    }

    private EarlyExitPrediction Expected(int index)
    {
        var context = new Microsoft.ML.MLContext();
        var model = context.Gati().LoadModel(models.First, out _);
        using var engine = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(model);
        return engine.Predict(new ImageInput { Image = models.Images[index] });
    }

    private static async Task AssertProblem(HttpResponseMessage response, HttpStatusCode status, string detail)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal((int)status, json.RootElement.GetProperty("status").GetInt32());
        Assert.Contains(detail, json.RootElement.GetProperty("detail").GetString(), StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Predict_PngOfATestImage_AnswersLikeTheEngine()
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        for (var i = 0; i < 5; i++)
        {
            using var response = await client.PostAsync("/predict", Body(LoadTest.LoadTest.Png(models.RawImages[i], 28, 28), "image/png"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var prediction = await response.Content.ReadFromJsonAsync<PredictionResponse>();
            var expected = Expected(i);
            Assert.Equal(expected.PredictedClass, prediction!.Label);
            Assert.Equal(expected.ExitLayer, prediction.ExitLayer);
            Assert.Equal(10, prediction.Scores.Count);
            Assert.Equal(expected.Score[(int)expected.PredictedLabel - 1], prediction.Scores[prediction.Label], 4);
            Assert.True(prediction.LatencyMs > 0);
        }
    }

    [Fact]
    public async Task Predict_JsonPixels_AndJpeg_AreAccepted()
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        var json = "{\"pixels\":[" + string.Join(",", models.RawImages[3]) + "]}";
        using var fromJson = await client.PostAsync("/predict", Body(Encoding.UTF8.GetBytes(json), "application/json"));
        Assert.Equal(HttpStatusCode.OK, fromJson.StatusCode);
        Assert.Equal(Expected(3).PredictedClass, (await fromJson.Content.ReadFromJsonAsync<PredictionResponse>())!.Label);

        using var bitmap = SkiaSharp.SKBitmap.Decode(LoadTest.LoadTest.Png(models.RawImages[3], 28, 28));
        using var jpeg = SkiaSharp.SKImage.FromBitmap(bitmap).Encode(SkiaSharp.SKEncodedImageFormat.Jpeg, 95);
        using var fromJpeg = await client.PostAsync("/predict", Body(jpeg.ToArray(), "image/jpeg"));
        Assert.Equal(HttpStatusCode.OK, fromJpeg.StatusCode);
    }

    [Fact]
    public async Task Predict_LargerImage_IsResizedToTheModelsInput()
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        var big = new byte[112 * 112];
        for (var y = 0; y < 112; y++)
            for (var x = 0; x < 112; x++) big[y * 112 + x] = models.RawImages[1][y / 4 * 28 + x / 4];
        using var response = await client.PostAsync("/predict", Body(LoadTest.LoadTest.Png(big, 112, 112), "image/png"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Theory]
    [InlineData(null, "image/png or image/jpeg")]
    [InlineData("text/plain", "image/png or image/jpeg")]
    [InlineData("application/xml", "got 'application/xml'")]
    public async Task Predict_UnsupportedContentType_Is415(string? contentType, string detail)
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        using var response = await client.PostAsync("/predict", Body([1, 2, 3], contentType));
        await AssertProblem(response, HttpStatusCode.UnsupportedMediaType, detail);
    }

    [Theory]
    [InlineData("image/png", new byte[] { 0x89, 0x50, 0x4E, 0x47, 1, 2, 3 }, "not a readable PNG or JPEG")]
    [InlineData("image/png", new byte[] { 0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 1, 0, 1, 0, 0, 0, 0, 0x3B }, "PNG or JPEG")]
    [InlineData("application/json", new byte[] { (byte)'{', (byte)'x' }, "not valid")]
    public async Task Predict_UndecodableBody_Is400(string contentType, byte[] body, string detail)
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        using var response = await client.PostAsync("/predict", Body(body, contentType));
        await AssertProblem(response, HttpStatusCode.BadRequest, detail);
    }

    [Theory]
    [InlineData("{}", "needs a \"pixels\" array")]
    [InlineData("{\"pixels\":[1,2,3]}", "has 3 values; the model reads 1x28x28 = 784")]
    [InlineData("{\"pixels\":\"many\"}", "not valid")]
    public async Task Predict_BadPixelArray_Is400(string json, string detail)
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        using var response = await client.PostAsync("/predict", Body(Encoding.UTF8.GetBytes(json), "application/json"));
        await AssertProblem(response, HttpStatusCode.BadRequest, detail);
    }

    [Fact]
    public async Task Predict_PixelOutOfRange_Is400NamingIt()
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        var pixels = new int[784];
        pixels[42] = 300;
        using var response = await client.PostAsync("/predict", Body(Encoding.UTF8.GetBytes("{\"pixels\":[" + string.Join(",", pixels) + "]}"), "application/json"));
        await AssertProblem(response, HttpStatusCode.BadRequest, "\"pixels\"[42] is 300");
    }

    [Fact]
    public async Task Predict_EmptyOrTooLargeBody_Is400Or413()
    {
        using var factory = Factory(maxBytes: 1000);
        using var client = factory.CreateClient();
        using var empty = await client.PostAsync("/predict", Body([], "image/png"));
        await AssertProblem(empty, HttpStatusCode.BadRequest, "empty");
        using var large = await client.PostAsync("/predict", Body(new byte[5000], "image/png"));
        await AssertProblem(large, HttpStatusCode.RequestEntityTooLarge, "larger than 1000 bytes");
    }

    [Fact]
    public async Task HealthModelAndMetrics_Endpoints_Respond()
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        using (var response = await client.PostAsync("/predict", Body(LoadTest.LoadTest.Png(models.RawImages[0], 28, 28), "image/png")))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using (var health = JsonDocument.Parse(await client.GetStringAsync("/health")))
        {
            Assert.Equal("Healthy", health.RootElement.GetProperty("status").GetString());
            Assert.Equal("model generation 1 loaded (file)", health.RootElement.GetProperty("reason").GetString());
            Assert.Equal(1, health.RootElement.GetProperty("generation").GetInt32());
            Assert.Equal("default", health.RootElement.GetProperty("model").GetString());
        }
        using var model = JsonDocument.Parse(await client.GetStringAsync("/model"));
        Assert.Equal(1, model.RootElement.GetProperty("generation").GetInt32());
        Assert.Equal("Serving", model.RootElement.GetProperty("state").GetString());
        Assert.Equal("default", model.RootElement.GetProperty("model").GetString());
        Assert.Equal(0, model.RootElement.GetProperty("warnings").GetArrayLength());
        Assert.Equal("1x28x28", model.RootElement.GetProperty("inputShape").GetString());
        var metrics = await client.GetStringAsync("/metrics");
        Assert.Contains("gati_predictions", metrics);
    }

    [Fact]
    public async Task Predict_HotReloadToAnotherInputSizeWhileARequestWaits_IsAnsweredByTheModelItWasDecodedFor()
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        // A stopped clock holds each request in its micro-batch until the test moves it on.
        var clock = new ManualClock();
        using var factory = Factory(path).WithWebHostBuilder(host =>
        {
            host.UseSetting("Gati:Pool:Batching", "true");
            host.UseSetting("Gati:Pool:MaxBatchDelayMs", "1000");
            host.ConfigureServices(services => services.AddSingleton<TimeProvider>(clock));
        });
        using var client = factory.CreateClient();
        var pool = factory.Services.GetRequiredService<EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction>>();
        var png = LoadTest.LoadTest.Png(models.RawImages[6], 28, 28);
        var guard = TimeSpan.FromMinutes(2);

        // Decoded as 1x28x28 for the first model; the model file is replaced by a 3-class RGB 16x16 one before it runs.
        var waiting = client.PostAsync("/predict", Body(png, "image/png"));
        await clock.WhenArmedAsync().WaitAsync(guard);
        File.Copy(models.Other, path, overwrite: true);
        pool.Reload();
        clock.Advance(TimeSpan.FromSeconds(1));
        using (var response = await waiting.WaitAsync(guard))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var prediction = await response.Content.ReadFromJsonAsync<PredictionResponse>();
            Assert.Equal(Expected(6).PredictedClass, prediction!.Label);
            Assert.Equal(10, prediction.Scores.Count);
        }

        // The next request is decoded for, and answered by, the new model.
        var next = client.PostAsync("/predict", Body(png, "image/png"));
        await clock.WhenArmedAsync().WaitAsync(guard);
        clock.Advance(TimeSpan.FromSeconds(1));
        using (var response = await next.WaitAsync(guard))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var prediction = await response.Content.ReadFromJsonAsync<PredictionResponse>();
            Assert.Equal(["a", "b", "c"], prediction!.Scores.Keys.Order());
        }
    }

    [Fact]
    public void Startup_WithoutAModelPath_SaysWhatToSet()
    {
        using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(host => host.UseSetting("Gati:ModelPath", ""));
        var error = Assert.Throws<InvalidOperationException>(() => factory.CreateClient());
        Assert.Contains("Set Gati:ModelPath", error.Message);
    }
}
