using System.Globalization;
using Gati.MLNet.Data;

namespace Gati.MLNet.Models;

/// <summary>The shape of one ResNet depth: block kind, blocks per stage and channel expansion.</summary>
public sealed class ResNetSpec
{
    private ResNetSpec(ResNetArchitecture architecture, bool bottleneck, int[] blocksPerStage)
    {
        Architecture = architecture;
        Bottleneck = bottleneck;
        BlocksPerStage = blocksPerStage;
    }

    /// <summary>The architecture described.</summary>
    public ResNetArchitecture Architecture { get; }

    /// <summary>True for Bottleneck blocks (ResNet-50 and deeper), false for BasicBlock.</summary>
    public bool Bottleneck { get; }

    /// <summary>Output channels of a block relative to its planes: 4 for Bottleneck, 1 for BasicBlock.</summary>
    public int Expansion => Bottleneck ? 4 : 1;

    /// <summary>Residual blocks in each of the four stages.</summary>
    public IReadOnlyList<int> BlocksPerStage { get; }

    /// <summary>Total residual blocks: the number of addressable layers (1-based).</summary>
    public int LayerCount => BlocksPerStage.Sum();

    /// <summary>The spec of an architecture.</summary>
    public static ResNetSpec For(ResNetArchitecture architecture) => architecture switch
    {
        ResNetArchitecture.ResNet18 => new(architecture, false, [2, 2, 2, 2]),
        ResNetArchitecture.ResNet34 => new(architecture, false, [3, 4, 6, 3]),
        ResNetArchitecture.ResNet50 => new(architecture, true, [3, 4, 6, 3]),
        ResNetArchitecture.ResNet101 => new(architecture, true, [3, 4, 23, 3]),
        ResNetArchitecture.ResNet152 => new(architecture, true, [3, 8, 36, 3]),
        _ => throw new ArgumentOutOfRangeException(nameof(architecture), architecture, "Unknown ResNet architecture."),
    };

    /// <summary>Parses "resnet18", "ResNet-50", "18" and the like.</summary>
    public static ResNetArchitecture Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        var digits = new string(text.Where(char.IsDigit).ToArray());
        var prefix = new string(text.Where(char.IsLetter).ToArray()).ToLowerInvariant();
        if ((prefix is "" or "resnet") && int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var depth))
        {
            switch (depth)
            {
                case 18: return ResNetArchitecture.ResNet18;
                case 34: return ResNetArchitecture.ResNet34;
                case 50: return ResNetArchitecture.ResNet50;
                case 101: return ResNetArchitecture.ResNet101;
                case 152: return ResNetArchitecture.ResNet152;
            }
        }
        throw new ArgumentException($"Unknown architecture '{text}': expected resnet18, resnet34, resnet50, resnet101 or resnet152.", nameof(text));
    }

    /// <summary>
    /// The 1-based stage (1..4) and the index of the block within its stage for a 1-based layer number.
    /// </summary>
    public (int Stage, int BlockInStage) Locate(int layer)
    {
        CheckLayer(layer);
        var remaining = layer - 1;
        for (var stage = 0; stage < BlocksPerStage.Count; stage++)
        {
            if (remaining < BlocksPerStage[stage]) return (stage + 1, remaining);
            remaining -= BlocksPerStage[stage];
        }
        throw new InvalidOperationException("unreachable");
    }

    /// <summary>Throws a clear error when <paramref name="layer"/> is not a layer of this architecture.</summary>
    public void CheckLayer(int layer, string? parameterName = null)
    {
        if (layer < 1 || layer > LayerCount)
            throw new ArgumentOutOfRangeException(parameterName ?? nameof(layer), layer,
                $"{Architecture} has layers 1..{LayerCount} (the outputs of its residual blocks); layer {layer} does not exist.");
    }

    /// <summary>
    /// The [channels, height, width] of a layer's output for an input of the given size and base width.
    /// Layer 0 is the stem (first convolution) output.
    /// </summary>
    public TensorShape LayerOutputShape(int layer, TensorShape input, int baseWidth)
    {
        if (layer != 0) CheckLayer(layer);
        int height = input.Height, width = input.Width, channels = baseWidth;
        if (layer == 0) return new TensorShape(channels, height, width);
        var (stage, _) = Locate(layer);
        for (var s = 2; s <= stage; s++)
        {
            // 3x3 convolution, stride 2, padding 1.
            height = (height - 1) / 2 + 1;
            width = (width - 1) / 2 + 1;
        }
        channels = baseWidth * (1 << (stage - 1)) * Expansion;
        return new TensorShape(channels, height, width);
    }
}
