namespace Gati.MLNet.Torch;

/// <summary>The operation a <see cref="NumericsCase"/> runs forward and backward.</summary>
public enum NumericsOperation
{
    /// <summary>2-D convolution without bias, padding kernel/2 (the ResNet's convolutions).</summary>
    Conv2d,

    /// <summary>Batch normalisation in training mode (batch statistics), with affine weight and bias.</summary>
    BatchNorm2d,

    /// <summary>A fully connected layer with bias (predictors and selectors).</summary>
    Linear,
}
