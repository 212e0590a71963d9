namespace Gati.Cli.Infrastructure;

/// <summary>Parses layer lists such as <c>1-8</c>, <c>2,4,6</c> or <c>1-3,7</c>.</summary>
internal static class LayerList
{
    public static int[] Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        var layers = new SortedSet<int>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var range = part.Split('-', StringSplitOptions.TrimEntries);
            if (range.Length is < 1 or > 2 || !range.All(r => int.TryParse(r, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
                throw new ArgumentException($"Layer list '{text}': '{part}' is not a layer number or a range like 1-8.");
            var from = int.Parse(range[0], CultureInfo.InvariantCulture);
            var to = range.Length == 2 ? int.Parse(range[1], CultureInfo.InvariantCulture) : from;
            if (from < 1 || to < from) throw new ArgumentException($"Layer list '{text}': '{part}' is not an increasing range of layers from 1.");
            for (var layer = from; layer <= to; layer++) layers.Add(layer);
        }
        return layers.ToArray();
    }
}
