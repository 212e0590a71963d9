using System.Globalization;
using System.Text;
using CsCheck;
using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Gati.Samples.WebApi.Tests;

/// <summary>
/// Property and fuzz tests of the sample's request decoding (the function POST /predict runs on a body): PNG, JPEG
/// and JSON bodies, valid, mutated and random, decode to a model input of the right size with finite values, or fail
/// with the two exceptions the endpoint turns into 400 (InvalidDataException, ArgumentException); unmutated JSON bodies
/// and honestly sized images are decoded exactly when the documented rules accept them. No model is needed.
/// Fixed seeds; GATI_FUZZ_ITERATIONS runs more cases (docs/hardening.md).
/// </summary>
public sealed class InputDecodingFuzzTests(ITestOutputHelper output)
{
    /// <summary>
    /// A body and the model it is for. <paramref name="Accepted"/>: for a body the rules decide alone (an unmutated
    /// image with its true size, an unmutated JSON body), whether it must be decoded; null when either outcome is fine.
    /// </summary>
    public sealed record BodyCase(string MediaType, byte[] Body, bool Rgb, bool Normalized, string Origin, bool? Accepted)
    {
        public override string ToString() => $"{MediaType} {Body.Length} bytes ({Origin}) for a {(Rgb ? "3x32x32" : "1x28x28")} model";
    }

    /// <summary>An encoded image, and whether its header tells its true size.</summary>
    public sealed record ImageCase(byte[] Bytes, bool Honest);

    private static readonly Gen<ImageCase> Images =
        from width in Gen.Frequency((6, (IGen<int>)Gen.Int[1, 40]), (1, Gen.Int[100, 300]))
        from height in Gen.Int[1, 40]
        from seed in Gen.Byte
        from png in Gen.Bool
        from claimed in Gen.Frequency((5, (IGen<(int, int)?>)Gen.Const(((int, int)?)null)),
            (1, Gen.Select(Gen.OneOf(0, 1, 5000, 30000, 65535), Gen.OneOf(0, 1, 5000, 30000, 65535), (w, h) => ((int, int)?)(w, h))))
        select new ImageCase(Image(width, height, seed, png, claimed), claimed is null);

    private static byte[] Image(int width, int height, byte seed, bool png, (int Width, int Height)? claimed)
    {
        var rgba = new byte[width * height * 4];
        for (var i = 0; i < rgba.Length; i++) rgba[i] = (byte)(seed + i * 7 + i / 97);
        var encoded = ImageFiles.Encode(width, height, rgba, png);
        return claimed is { } size ? ImageFiles.WithClaimedSize(encoded, size.Width, size.Height) : encoded;
    }

    // JSON pixel values: in range, at and past the bounds, non-numbers, and numbers float cannot hold; each with
    // whether the documented rules accept it (a JSON number from 0 to 255).
    private static readonly Gen<(string Text, bool Valid)> PixelValues = Gen.Frequency(
        (12, (IGen<(string, bool)>)Gen.Int[0, 255].Select(v => (v.ToString(CultureInfo.InvariantCulture), true))),
        (2, Gen.Double[0, 255].Select(v => (v.ToString("R", CultureInfo.InvariantCulture), true))),
        (1, Gen.OneOf(("-1", false), ("256", false), ("255.5", false), ("-0", true), ("1e39", false), ("-1e39", false), ("1e-50", true), ("NaN", false),
            ("\"NaN\"", false), ("\"12\"", false), ("null", false), ("true", false), ("[]", false), ("{}", false), ("1E2", true), ("0x10", false))));

    /// <summary>A JSON body; <paramref name="Valid"/>: it follows the documented shape with numbers 0-255 only.</summary>
    public sealed record JsonCase(string Json, bool Valid, int Count);

    private static readonly Gen<JsonCase> JsonBodies =
        from size in Gen.Frequency((4, (IGen<int>)Gen.OneOf(784, 3072)), (1, Gen.Int[0, 3100]))
        from values in PixelValues.Array[size]
        from property in Gen.Frequency((8, (IGen<string>)Gen.Const("pixels")), (1, Gen.OneOf("Pixels", "PIXELS", "pixel", "")))
        from shape in Gen.Frequency((8, (IGen<int>)Gen.Const(0)), (1, Gen.Int[1, 4]))
        let texts = values.Select(v => v.Text).ToArray()
        select new JsonCase(shape switch
        {
            0 => $"{{\"{property}\": [{string.Join(",", texts)}]}}",
            1 => $"[{string.Join(",", texts)}]",
            2 => $"{{\"{property}\": [[{string.Join(",", texts)}]]}}",
            3 => $"{{\"{property}\": {string.Join(",", texts.Take(1))}, \"extra\": [{string.Join(",", texts)}]}}",
            _ => $"{{\"{property}\": \"{string.Join(",", texts)}\"}}",
        }, property == "pixels" && shape == 0 && values.All(v => v.Valid), size);

    private static readonly Gen<BodyCase> Bodies =
        from kind in Gen.Int[0, 2]
        from image in Images
        from json in JsonBodies
        from random in Gen.Byte.Array[0, 2000]
        from mutation in Mutations.Any(noneOneIn: 3)
        from origin in Gen.Frequency((6, (IGen<int>)Gen.Const(0)), (1, Gen.Const(1)))
        from rgb in Gen.Bool
        from normalized in Gen.Bool
        select Build(kind, image, json, random, mutation, origin == 1, rgb, normalized);

    private static BodyCase Build(int kind, ImageCase image, JsonCase json, byte[] random, Mutations.Mutation mutation, bool randomBody, bool rgb, bool normalized)
    {
        var mediaType = kind switch { 0 => "image/png", 1 => "image/jpeg", _ => "application/json" };
        var body = randomBody ? random : kind == 2 ? Encoding.UTF8.GetBytes(json.Json) : image.Bytes;
        var size = rgb ? 3 * 32 * 32 : 28 * 28;
        bool? accepted = randomBody || mutation.Kind != Mutations.Kind.None ? null
            : kind == 2 ? json.Valid && json.Count == size
            : image.Honest ? true : null;
        return new BodyCase(mediaType, mutation.Apply(body), rgb, normalized, randomBody ? "random bytes" : mutation.ToString(), accepted);
    }

    [Fact]
    public void FromBody_GeneratedAndHostileBodies_DecodeToTheModelInputOrFailWith400Exceptions()
    {
        Fuzz.Run("web-input", Bodies, c =>
        {
            var shape = c.Rgb ? new TensorShape(3, 32, 32) : new TensorShape(1, 28, 28);
            var normalization = c.Normalized ? (c.Rgb ? ChannelNormalization.Cifar10 : ChannelNormalization.FashionMnist) : null;
            float[]? input = null;
            var outcome = "decoded";
            var allocated = Fuzz.AllocatedBytes(() =>
            {
                try
                {
                    input = RequestDecoder.FromBody(c.MediaType, c.Body, shape, normalization);
                }
                catch (Exception ex) when (ex is InvalidDataException or ArgumentException)
                {
                    Assert.False(string.IsNullOrWhiteSpace(ex.Message));
                    outcome = "refused";
                }
            });
            if (c.Accepted is { } accepted) Assert.True(accepted == (input is not null), $"{(accepted ? "refused" : "decoded")}, but the documented rules {(accepted ? "accept" : "refuse")} it");
            if (input is not null)
            {
                Assert.Equal(shape.Size, input.Length);
                Assert.All(input, v => Assert.True(float.IsFinite(v)));
                if (normalization is null) Assert.All(input, v => Assert.InRange(v, 0f, 1f));
            }
            Assert.True(allocated < (16L << 20) + 16 * c.Body.Length, $"allocated {allocated} bytes for a {c.Body.Length}-byte body");
            return outcome;
        }, ciIterations: 400, output);
    }

    [Theory]
    [InlineData("{\"pixels\": \"not an array\"}")]
    [InlineData("[1, 2, 3]")]
    [InlineData("{\"pixels\": [1, 2,")]
    public void FromBody_MalformedJson_IsInvalidDataSayingSo(string json)
    {
        var error = Assert.Throws<InvalidDataException>(() => RequestDecoder.FromBody("application/json", Encoding.UTF8.GetBytes(json), new TensorShape(1, 28, 28), null));
        Assert.StartsWith("The JSON body is not valid", error.Message);
    }
}
