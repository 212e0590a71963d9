using System.Numerics;

namespace Gati.Cli.Infrastructure;

/// <summary>
/// Option validators. They run while the command line is parsed, so a bad value is rejected with the option's name
/// before a command prints or loads anything (the library would reject it too, but later and naming its own parameter).
/// </summary>
internal static class OptionRules
{
    /// <summary>Rejects values for which <paramref name="isValid"/> is false: "--epochs must be at least 1 (got 0)."</summary>
    public static Option<T> Require<T>(this Option<T> option, Func<T, bool> isValid, string requirement)
    {
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<T>();
            if (value is not null && !isValid(value))
                result.AddError(string.Create(CultureInfo.InvariantCulture, $"{option.Name} {requirement} (got {Format(value)})."));
        });
        return option;
    }

    public static Option<T> AtLeast<T>(this Option<T> option, T minimum) where T : struct, INumber<T> =>
        option.Require(v => v >= minimum && T.IsFinite(v), string.Create(CultureInfo.InvariantCulture, $"must be at least {minimum}"));

    public static Option<T?> AtLeast<T>(this Option<T?> option, T minimum) where T : struct, INumber<T> =>
        option.Require(v => v is not { } x || (x >= minimum && T.IsFinite(x)), string.Create(CultureInfo.InvariantCulture, $"must be at least {minimum}"));

    public static Option<T> Between<T>(this Option<T> option, T minimum, T maximum) where T : struct, INumber<T> =>
        option.Require(v => v >= minimum && v <= maximum, string.Create(CultureInfo.InvariantCulture, $"must be between {minimum} and {maximum}"));

    /// <summary>A finite number above zero.</summary>
    public static Option<double> Positive(this Option<double> option) =>
        option.Require(v => v > 0 && double.IsFinite(v), "must be a positive number");

    /// <inheritdoc cref="Positive(Option{double})"/>
    public static Option<double?> Positive(this Option<double?> option) =>
        option.Require(v => v is not { } x || (x > 0 && double.IsFinite(x)), "must be a positive number");

    /// <summary>A share in (0, 1]: a precision or agreement target.</summary>
    public static Option<double> Share(this Option<double> option) =>
        option.Require(v => v is > 0 and <= 1, "must be above 0 and at most 1");

    /// <summary>Rejects values that <paramref name="parse"/> rejects, prefixed with the option's name.</summary>
    public static Option<T> ParsedBy<T>(this Option<T> option, Action<T> parse)
    {
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<T>();
            if (value is null) return;
            try
            {
                parse(value);
            }
            catch (ArgumentException ex)
            {
                result.AddError($"{option.Name}: {CommandErrors.WithoutParameter(ex)}");
            }
        });
        return option;
    }

    private static string Format(object value) => value switch
    {
        Array array => string.Join(" ", array.Cast<object>().Select(v => Convert.ToString(v, CultureInfo.InvariantCulture))),
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "",
    };
}
