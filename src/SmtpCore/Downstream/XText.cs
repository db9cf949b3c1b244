// xtext (RFC 3461 §4): printable US-ASCII except '+' and '=' stands for itself, every other
// octet becomes "+XX" (upper-case hex). XFORWARD values use it (Postfix XFORWARD_README).
using System.Text;

namespace Portcullis.SmtpCore.Downstream;

internal static class XText
{
    private static readonly System.Buffers.SearchValues<char> Plain = System.Buffers.SearchValues.Create(
        "!\"#$%&'()*,-./0123456789:;<>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~");

    public static string Encode(string value)
    {
        if (!value.AsSpan().ContainsAnyExcept(Plain)) return value;   // the usual case: nothing to encode
        var sb = new StringBuilder(value.Length);
        Span<byte> utf8 = stackalloc byte[4];
        foreach (var rune in value.EnumerateRunes())
        {
            if (rune.Value is >= 33 and <= 126 && rune.Value != '+' && rune.Value != '=')
            {
                sb.Append((char)rune.Value);
                continue;
            }
            int n = rune.EncodeToUtf8(utf8);
            for (int i = 0; i < n; i++) sb.Append('+').Append(utf8[i].ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}
