namespace Gati.MLNet.Models;

/// <summary>The CIFAR-style ResNet depths of the reference (3x3 stem, no max-pool, four stages).</summary>
public enum ResNetArchitecture
{
    /// <summary>BasicBlock, [2, 2, 2, 2]: 8 residual blocks.</summary>
    ResNet18,

    /// <summary>BasicBlock, [3, 4, 6, 3]: 16 residual blocks.</summary>
    ResNet34,

    /// <summary>Bottleneck (expansion 4), [3, 4, 6, 3]: 16 residual blocks.</summary>
    ResNet50,

    /// <summary>Bottleneck (expansion 4), [3, 4, 23, 3]: 33 residual blocks.</summary>
    ResNet101,

    /// <summary>Bottleneck (expansion 4), [3, 8, 36, 3]: 50 residual blocks.</summary>
    ResNet152,
}
