using Gati.MLNet.Data;
using Gati.MLNet.Online;

namespace Gati.MLNet.Tests;

/// <summary>The changed camera of the drift workload, and the drift stream that uses it.</summary>
public sealed class CameraShiftTests
{
    private static float[] Gradient(int length, float scale) => Enumerable.Range(0, length).Select(i => scale * (i % 97) / 96f).ToArray();

    [Fact]
    public void Apply_HalvesContrastAboutTheMean_AddsSeededNoise_AndStaysInRange()
    {
        var image = Gradient(3 * 32 * 32, 255);
        var shift = new CameraShift(contrast: 0.5, noise: 0.05, range: 255);
        var a = new float[image.Length];
        var b = new float[image.Length];
        var c = new float[image.Length];
        shift.Apply(image, a, seed: 7);
        shift.Apply(image, b, seed: 7);
        shift.Apply(image, c, seed: 8);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.All(a, x => Assert.InRange(x, 0f, 255f));

        // Without noise the distance from the mean halves exactly.
        var quiet = new float[image.Length];
        new CameraShift(0.5, 0, 255).Apply(image, quiet, seed: 0);
        var mean = image.Average();
        for (var i = 0; i < image.Length; i += 101) Assert.Equal(mean + 0.5 * (image[i] - mean), quiet[i], 3);
        // The noise has the asked standard deviation (a share of the range).
        var residual = Enumerable.Range(0, image.Length).Select(i => (double)a[i] - quiet[i]).ToArray();
        var sd = Math.Sqrt(residual.Select(r => r * r).Average());
        Assert.InRange(sd, 0.9 * 12.75, 1.1 * 12.75);
    }

    [Fact]
    public void Apply_NormalisedImage_ShiftsInPixelSpaceAndNormalisesBack()
    {
        var normalization = new ChannelNormalization([0.5f, 0.4f], [0.25f, 0.2f]);
        var pixels = Gradient(2 * 16 * 16, 1);
        var plane = 16 * 16;
        var normalised = pixels.Select((p, i) => (p - normalization.Mean[i / plane]) / normalization.Std[i / plane]).ToArray();
        var shifted = new float[pixels.Length];
        new CameraShift(0.5, 0, 1).Apply(normalised, shifted, seed: 1, normalization);
        var expected = new float[pixels.Length];
        new CameraShift(0.5, 0, 1).Apply(pixels, expected, seed: 1);
        for (var i = 0; i < pixels.Length; i++)
            Assert.Equal(expected[i], shifted[i] * normalization.Std[i / plane] + normalization.Mean[i / plane], 4);
    }

    [Fact]
    public void Apply_BadInput_SaysWhatIsWrong()
    {
        Assert.Throws<ArgumentOutOfRangeException>("contrast", () => new CameraShift(0, 0.05, 255));
        Assert.Throws<ArgumentOutOfRangeException>("noise", () => new CameraShift(0.5, -0.1, 255));
        Assert.Throws<ArgumentOutOfRangeException>("range", () => new CameraShift(0.5, 0.05, float.NaN));
        var shift = new CameraShift(0.5, 0.05, 255);
        Assert.Throws<ArgumentException>("shifted", () => shift.Apply(new float[4], new float[3], 0));
        var withNaN = new float[] { 1, float.NaN, 3, 4 };
        var error = Assert.Throws<InvalidDataException>(() => shift.Apply(withNaN, new float[4], 0));
        Assert.Contains("NaN", error.Message);
        Assert.Throws<ArgumentException>("image", () => shift.Apply(new float[5], new float[5], 0, new ChannelNormalization([0.5f, 0.5f], [1f, 1f])));
    }

    [Fact]
    public void RangeOf_RawPixelsAre255_ScaledPixelsAre1()
    {
        Assert.Equal(255f, CameraShift.RangeOf([0f, 12f, 254f]));
        Assert.Equal(1f, CameraShift.RangeOf([0f, 0.5f, 1f]));
    }

    [Fact]
    public void Workloads_Drift_SecondHalfReadsTheShiftedCopies()
    {
        var labels = Enumerable.Range(0, 300).Select(i => (uint)(i % 10 + 1)).ToArray();
        var a = Workloads.Drift(labels, 1001, seed: 3);
        Assert.Equal(a.Rows, Workloads.Drift(labels, 1001, seed: 3).Rows);
        Assert.Equal(["original camera", "shifted camera"], a.PhaseNames!);
        for (var i = 0; i < a.Count; i++)
        {
            var shifted = i >= 500;
            Assert.Equal(shifted ? 1 : 0, a.Phases[i]);
            Assert.InRange(a.Rows[i], shifted ? 300 : 0, shifted ? 599 : 299);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Workloads.Drift(labels, 1, seed: 0));
    }
}
