using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Gati.Samples.WebApi.Tests;

/// <summary>
/// The hostile inputs of the issue-25 trial against the real server (WebApplicationFactory): images whose header
/// claims far more than their bytes hold, truncated images, a pixel limit per model, bounded decoding, and strict JSON.
/// The model is a small trained Fashion-MNIST model with two caches (the 1.1-format test asset).
/// </summary>
public sealed class DecodingLimitsTests
{
    internal static string ModelPath => Path.Combine(AppContext.BaseDirectory, "Assets", "learned-caches-format-1.1.zip");

    internal static WebApplicationFactory<Program> Factory(params (string Key, string Value)[] settings) =>
        new WebApplicationFactory<Program>().WithWebHostBuilder(host =>
        {
            host.UseSetting("Gati:ModelPath", ModelPath);
            host.UseSetting("Gati:WatchForChanges", "false");
            host.UseSetting("Gati:Pool:Device", "cpu");
            host.UseSetting("Gati:DrainSeconds", "0");
            foreach (var (key, value) in settings) host.UseSetting(key, value);
        });

    internal static ByteArrayContent Body(byte[] bytes, string contentType)
    {
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        return content;
    }

    internal static async Task<string> ProblemDetail(HttpResponseMessage response, HttpStatusCode status)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"{response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var json = JsonDocument.Parse(text);
        return json.RootElement.GetProperty("detail").GetString()!;
    }

    private static readonly Lazy<byte[][]> RawTestImages = new(() => RealData.FashionMnistTestPixels(4));

    internal static byte[] TestPng(int index) => LoadTest.LoadTest.Png(RawTestImages.Value[index], 28, 28);

    [Theory]
    [InlineData("image/png")]
    [InlineData("image/jpeg")]
    public async Task Predict_TruncatedImage_Is400SayingSo(string mediaType)
    {
        using var factory = Factory();
        using var client = factory.CreateClient();
        var whole = TestPng(1);
        if (mediaType == "image/jpeg")
        {
            using var bitmap = SkiaSharp.SKBitmap.Decode(whole);
            using var jpeg = SkiaSharp.SKImage.FromBitmap(bitmap).Encode(SkiaSharp.SKEncodedImageFormat.Jpeg, 95);
            whole = jpeg.ToArray();
        }
        using (var ok = await client.PostAsync("/predict", Body(whole, mediaType)))
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);

        using var response = await client.PostAsync("/predict", Body(ImageFiles.Truncated(whole), mediaType));
        Assert.StartsWith("The image is truncated", await ProblemDetail(response, HttpStatusCode.BadRequest));
    }

    [Fact]
    public async Task Predict_ImageAboveTheModelsPixelLimit_Is400UnlessGatiMaxImagePixelsAllowsIt()
    {
        // 2100 x 2100 black: a few KB, within PNG's ratio, but above 2048 x 2048 (the limit for a 28 x 28 model).
        var png = ImageFiles.Encode(2100, 2100, new byte[2100 * 2100 * 4], png: true);
        using (var factory = Factory())
        using (var client = factory.CreateClient())
        using (var response = await client.PostAsync("/predict", Body(png, "image/png")))
            Assert.Equal("The image header claims 2100x2100 = 4410000 pixels, more than the 4194304 allowed (Gati:MaxImagePixels).",
                await ProblemDetail(response, HttpStatusCode.BadRequest));

        using (var factory = Factory(("Gati:MaxImagePixels", "4410000")))
        using (var client = factory.CreateClient())
        using (var response = await client.PostAsync("/predict", Body(png, "image/png")))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    private static string Pixels(int count, string value = "0") => string.Join(",", Enumerable.Repeat(value, count));

    [Theory]
    [InlineData("{\"Pixels\":[@]}", "it has a property \"Pixels\"; the only property is \"pixels\" (names are case-sensitive)")]
    [InlineData("{\"PIXELS\":[@]}", "it has a property \"PIXELS\"")]
    [InlineData("{\"pixels\":[@],\"pixels\":[@]}", "it has \"pixels\" twice")]
    [InlineData("{\"pixels\":[@],\"extra\":1}", "it has a property \"extra\"")]
    [InlineData("{\"pixels\":[\"12\",~]}", "\"pixels\"[0] is a string; pixels are JSON numbers from 0 to 255")]
    [InlineData("{\"pixels\":[~,null]}", "\"pixels\"[783] is null")]
    [InlineData("{\"pixels\":[~,[1]]}", "\"pixels\"[783] is an array")]
    [InlineData("{\"pixels\":[~,1e39]}", "\"pixels\"[783] is 1e39; pixels must be numbers from 0 to 255")]
    [InlineData("{\"pixels\":\"@\"}", "\"pixels\" must be an array of numbers, not a string")]
    [InlineData("[@]", "it must be one object, {\"pixels\": [...]}, not an array")]
    [InlineData("{\"pixels\":[@,]}", "The JSON body is not valid")]
    [InlineData("{\"pixels\":[@]} // comment", "The JSON body is not valid")]
    [InlineData("{\"pixels\":[@]}{}", "The JSON body is not valid")]
    public async Task Predict_JsonOutsideTheDocumentedShape_Is400NamingTheProblem(string template, string detail)
    {
        // @ is the model's 784 zeros, ~ is 783 beside one more value: only the named problem is wrong.
        var json = template.Replace("@", Pixels(784), StringComparison.Ordinal).Replace("~", Pixels(783), StringComparison.Ordinal);
        using var factory = Factory();
        using var client = factory.CreateClient();
        using (var valid = await client.PostAsync("/predict", Body(Encoding.UTF8.GetBytes("{\"pixels\":[" + Pixels(784) + "]}"), "application/json")))
            Assert.Equal(HttpStatusCode.OK, valid.StatusCode);

        using var response = await client.PostAsync("/predict", Body(Encoding.UTF8.GetBytes(json), "application/json"));
        Assert.Contains(detail, await ProblemDetail(response, HttpStatusCode.BadRequest), StringComparison.Ordinal);
    }

    [Fact]
    public async Task DecodeSlots_AllHeld_RequestsWaitForOneAndEverySlotComesBackOnEveryPath()
    {
        using var factory = Factory(("Gati:MaxConcurrentDecodes", "2"));
        using var client = factory.CreateClient();
        var gate = factory.Services.GetRequiredService<DecodingGate>();
        Assert.Equal(2, gate.Slots);
        var guard = TimeSpan.FromMinutes(1);
        using (var warm = await client.PostAsync("/predict", Body(TestPng(0), "image/png")))
            Assert.Equal(HttpStatusCode.OK, warm.StatusCode);

        // The test holds both slots: requests queue at the gate, none is decoded.
        var held = new[] { await gate.EnterAsync(CancellationToken.None), await gate.EnterAsync(CancellationToken.None) };
        using var cancelled = new CancellationTokenSource();
        var good = client.PostAsync("/predict", Body(TestPng(2), "image/png"));
        var bad = client.PostAsync("/predict", Body(ImageFiles.Truncated(TestPng(2)), "image/png"));
        var abandoned = client.PostAsync("/predict", Body(TestPng(3), "image/png"), cancelled.Token);
        await Until(() => gate.Waiting == 3, guard);
        Assert.False(good.IsCompleted || bad.IsCompleted);

        // A request cancelled while it waits leaves the queue and takes no slot.
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned.WaitAsync(guard));
        await Until(() => gate.Waiting == 2, guard);

        foreach (var lease in held) lease.Dispose();
        using (var response = await good.WaitAsync(guard)) Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using (var response = await bad.WaitAsync(guard)) Assert.StartsWith("The image is truncated", await ProblemDetail(response, HttpStatusCode.BadRequest));
        // Decoded, refused, cancelled: every slot is free again.
        await Until(() => gate.Free == 2 && gate.Waiting == 0, guard);
    }

    /// <summary>Waits for a condition on the server's state (a polled flag, not a fixed sleep).</summary>
    internal static async Task Until(Func<bool> condition, TimeSpan guard)
    {
        var deadline = DateTime.UtcNow + guard;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("The server never reached the expected state.");
            await Task.Delay(5);
        }
    }
}

/// <summary>The issue's flood: 64 tiny PNGs claiming 4000 x 4000 at once. Resident memory is measured, so it runs alone.</summary>
[Collection(ServerMemoryCollection.Name)]
public sealed class DecodingFloodTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Predict_64ConcurrentTinyPngsClaiming4000x4000_AreAll400AndMemoryStaysFlat()
    {
        var hostile = ImageFiles.TinyPngClaiming(4000, 4000);
        using var factory = DecodingLimitsTests.Factory();
        using var client = factory.CreateClient();
        // Warm up: the model, the endpoint, and the refusal's own code paths.
        using (var ok = await client.PostAsync("/predict", DecodingLimitsTests.Body(DecodingLimitsTests.TestPng(0), "image/png")))
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        using (var refused = await client.PostAsync("/predict", DecodingLimitsTests.Body(hostile, "image/png")))
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);

        var details = new string[64];
        var memory = await PeakMemory.MeasureAsync(async () =>
        {
            await Task.WhenAll(Enumerable.Range(0, 64).Select(async i =>
            {
                using var response = await client.PostAsync("/predict", DecodingLimitsTests.Body(hostile, "image/png"));
                details[i] = await DecodingLimitsTests.ProblemDetail(response, HttpStatusCode.BadRequest);
            }));
        });
        output.WriteLine($"64 concurrent {hostile.Length}-byte PNGs claiming 4000x4000: {memory}");

        Assert.All(details, d => Assert.Contains($"claims 4000x4000 pixels, more than {hostile.Length} bytes of PNG can hold", d, StringComparison.Ordinal));
        Assert.True(memory.PeakGrowthBytes < 100L << 20, memory.ToString());
        // The server still answers.
        using var after = await client.PostAsync("/predict", DecodingLimitsTests.Body(DecodingLimitsTests.TestPng(1), "image/png"));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }
}

/// <summary>Tests that measure this process's resident memory must not run beside others (xunit runs classes in parallel).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ServerMemoryCollection
{
    public const string Name = "Server memory (runs alone)";
}
