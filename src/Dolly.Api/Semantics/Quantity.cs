using System.Globalization;
using System.Text.RegularExpressions;

namespace Dolly.Api.Semantics;

/// <summary>Parses Kubernetes resource quantities ("1Gi", "500M", "1.5e3") to a decimal value.</summary>
internal static partial class Quantity
{
    [GeneratedRegex("^([+-]?[0-9]*\\.?[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")]
    private static partial Regex Pattern();

    public static bool TryParse(string text, out decimal value)
    {
        value = 0;
        var m = Pattern().Match(text.Trim());
        if (!m.Success || !decimal.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var number))
        {
            return false;
        }

        string suffix = m.Groups[2].Value;
        decimal factor = suffix switch
        {
            "" => 1m,
            "Ki" => 1024m,
            "Mi" => 1024m * 1024,
            "Gi" => 1024m * 1024 * 1024,
            "Ti" => 1024m * 1024 * 1024 * 1024,
            "Pi" => 1024m * 1024 * 1024 * 1024 * 1024,
            "Ei" => 1024m * 1024 * 1024 * 1024 * 1024 * 1024,
            "n" => 0.000000001m,
            "u" => 0.000001m,
            "m" => 0.001m,
            "k" => 1e3m,
            "M" => 1e6m,
            "G" => 1e9m,
            "T" => 1e12m,
            "P" => 1e15m,
            "E" => 1e18m,
            _ => -1m,
        };
        if (factor < 0)
        {
            if (!int.TryParse(suffix[1..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int exp) || exp is > 27 or < -27)
            {
                return false;
            }

            factor = 1m;
            for (int i = 0; i < Math.Abs(exp); i++)
            {
                factor = exp > 0 ? factor * 10 : factor / 10;
            }
        }

        try
        {
            value = number * factor;
            return true;
        }
        catch (OverflowException)
        {
            return false;
        }
    }
}
