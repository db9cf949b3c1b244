// Reverse-path and forward-path syntax (RFC 5321 §4.1.2, §4.1.1.2-3) with ESMTP parameters
// (RFC 5321 §4.1.2 Mail-parameters / Rcpt-parameters; values checked by the session).
// Accepts the common "MAIL FROM: <a@b>" space; source routes are parsed and kept so that
// policy code can refuse them, and UTF-8 mailboxes are allowed (RFC 6531).
using System.Globalization;

namespace Portcullis.SmtpCore.Protocol;

public sealed class SmtpPath
{
    private SmtpPath(string localPart, string domain, string? sourceRoute)
    {
        LocalPart = localPart;
        Domain = domain;
        SourceRoute = sourceRoute;
    }

    public static SmtpPath Null { get; } = new("", "", null);

    public string LocalPart { get; }       // as written, quotes included
    public string Domain { get; }          // as written (may be an address literal)
    public string? SourceRoute { get; }    // "@a,@b" when the client sent one (obsolete, RFC 5321 §4.1.2)
    public bool IsNull => LocalPart.Length == 0 && Domain.Length == 0;
    public string Mailbox => _mailbox ??= Domain.Length == 0 ? LocalPart : LocalPart + "@" + Domain;
    public bool IsPostmaster => Domain.Length == 0 && LocalPart.Length > 0;
    public bool IsAscii => System.Text.Ascii.IsValid(LocalPart) && System.Text.Ascii.IsValid(Domain);

    // The wire form without the source route, which is never passed on.
    // Both made once: the log, the policy and the downstream each ask for them.
    public override string ToString() => _text ??= "<" + Mailbox + ">";

    private string? _mailbox;
    private string? _text;

    public static bool TryParse(string text, bool allowNull, out SmtpPath path, out string error) =>
        TryParse(text.AsSpan(), allowNull, out path, out error);

    // On the command line's own characters: only the parts an SmtpPath keeps become strings.
    internal static bool TryParse(ReadOnlySpan<char> text, bool allowNull, out SmtpPath path, out string error)
    {
        path = Null;
        error = "";
        if (text.Length < 2 || text[0] != '<' || text[^1] != '>')
        {
            error = "path must be enclosed in <>";
            return false;
        }
        var inner = text[1..^1];
        // The command parser decodes invalid UTF-8 to U+FFFD: such an address would be passed on
        // changed, so it is refused here (RFC 6531 §3.3 requires well-formed UTF-8).
        if (inner.Contains('\uFFFD'))
        {
            error = "address is not valid UTF-8";
            return false;
        }
        if (inner.Length == 0)
        {
            if (allowNull) return true;
            error = "empty path not allowed here";
            return false;
        }

        // RFC 5321 §4.5.1: "RCPT TO:<Postmaster>" without a domain must be accepted.
        if (!allowNull && inner.Equals("postmaster", StringComparison.OrdinalIgnoreCase))
        {
            path = new SmtpPath(inner.ToString(), "", null);
            return true;
        }

        string? route = null;
        if (inner[0] == '@')
        {
            int colon = inner.IndexOf(':');
            if (colon < 0) { error = "bad source route"; return false; }
            var hops = inner[..colon];
            inner = inner[(colon + 1)..];
            foreach (var range in hops.Split(','))
            {
                var hop = hops[range];
                if (hop.Length < 2 || hop[0] != '@' || !IsDomain(hop[1..]))
                {
                    error = "bad source route";
                    return false;
                }
            }
            route = hops.ToString();
        }

        int at = FindDomainAt(inner);
        if (at <= 0 || at == inner.Length - 1)
        {
            error = "mailbox must be local-part@domain";
            return false;
        }
        var local = inner[..at];
        var domain = inner[(at + 1)..];
        if (!IsLocalPart(local)) { error = "bad local-part"; return false; }
        if (!IsDomain(domain) && !IsAddressLiteral(domain.ToString())) { error = "bad domain"; return false; }
        if (local.Length > 64 || domain.Length > 255) { error = "mailbox too long"; return false; }
        path = new SmtpPath(local.ToString(), domain.ToString(), route);
        return true;
    }

    // The last '@' outside a quoted string separates local-part from domain.
    private static int FindDomainAt(ReadOnlySpan<char> s)
    {
        bool quoted = false;
        int at = -1;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (quoted && c == '\\') { i++; continue; }
            if (c == '"') quoted = !quoted;
            else if (c == '@' && !quoted) at = i;
        }
        return quoted ? -1 : at;
    }

    private static bool IsLocalPart(ReadOnlySpan<char> s)
    {
        if (s.Length == 0) return false;
        if (s[0] == '"')
        {
            if (s.Length < 2 || s[^1] != '"') return false;
            for (int i = 1; i < s.Length - 1; i++)
            {
                char c = s[i];
                if (c == '\\')
                {
                    i++;
                    if (i >= s.Length - 1 || s[i] < 32 || s[i] == 127) return false;
                    continue;
                }
                if (c == '"' || c < 32 || c == 127) return false;
            }
            return true;
        }
        // Dot-string: atoms of atext separated by single dots.
        if (s[0] == '.' || s[^1] == '.' || s.IndexOf("..", StringComparison.Ordinal) >= 0) return false;
        foreach (char c in s)
            if (!IsAtext(c) && c != '.') return false;
        return true;
    }

    private static bool IsAtext(char c) =>
        (c >= 0x80 && IsVisibleNonAscii(c)) // RFC 6531 UTF8-non-ascii
        || char.IsAsciiLetterOrDigit(c)
        || "!#$%&'*+-/=?^_`{|}~".Contains(c);

    internal static bool IsDomain(ReadOnlySpan<char> s)
    {
        if (s.Length == 0 || s.Length > 255) return false;
        // A single trailing dot is tolerated syntactically; policy code canonicalises.
        var t = s[^1] == '.' ? s[..^1] : s;
        if (t.Length == 0) return false;
        foreach (var range in t.Split('.'))
        {
            var label = t[range];
            if (label.Length == 0 || label.Length > 63) return false;
            if (label[0] == '-' || label[^1] == '-') return false;
            foreach (char c in label)
                if (!(char.IsAsciiLetterOrDigit(c) || c == '-' || (c >= 0x80 && IsLabelNonAscii(c)))) return false;
        }
        return true;
    }

    // RFC 6531 admits UTF-8, not the spaces, separators, controls and invisible format characters
    // that .NET's Trim() or a terminal would make disappear (NBSP, U+3000, U+0085, U+200B, U+202E).
    private static bool IsVisibleNonAscii(char c) =>
        char.GetUnicodeCategory(c) is not (UnicodeCategory.Control or UnicodeCategory.Format
            or UnicodeCategory.SpaceSeparator or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator
            or UnicodeCategory.OtherNotAssigned or UnicodeCategory.PrivateUse);

    // A U-label (RFC 5890 §2.3.2.1) is letters, marks and digits; surrogates carry the planes above.
    private static bool IsLabelNonAscii(char c) =>
        char.GetUnicodeCategory(c) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
            or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter
            or UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.Surrogate;

    private static bool IsAddressLiteral(string s)
    {
        if (s.Length < 3 || s[0] != '[' || s[^1] != ']') return false;
        string inner = s[1..^1];
        // IPAddress.TryParse alone also takes zone indexes ("%eth0") and hex/octal IPv4 forms ("0x7f").
        if (inner.StartsWith("IPv6:", StringComparison.OrdinalIgnoreCase))
            return inner[5..].All(c => char.IsAsciiHexDigit(c) || c is ':' or '.')
                && System.Net.IPAddress.TryParse(inner[5..], out var a6) && a6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        // Snum = 1*3DIGIT, decimal 0-255 (RFC 5321 §4.1.3).
        var parts = inner.Split('.');
        return parts.Length == 4 && parts.All(p => p.Length is >= 1 and <= 3 && p.All(char.IsAsciiDigit)
            && int.Parse(p, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture) <= 255);
    }
}

// "FROM:<path> KEY=VALUE KEY" split into the path and its parameters.
public readonly record struct PathArgument(SmtpPath Path, IReadOnlyList<KeyValuePair<string, string?>> Parameters);

public static class PathArgumentParser
{
    private static readonly KeyValuePair<string, string?>[] NoParameters = [];

    // The keywords of RFC 5321, 1870, 6152, 6531, 3461 and 4954, so that the common ones cost no string.
    private static readonly string[] KnownKeywords = ["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "NOTIFY", "ORCPT"];

    // prefix is "FROM:" or "TO:" (case-insensitive).
    public static bool TryParse(string argument, string prefix, bool allowNull, out PathArgument result, out string error)
    {
        result = default;
        if (!argument.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
        {
            error = $"syntax: expected {prefix}<address>";
            return false;
        }
        var rest = argument.AsSpan(prefix.Length).TrimStart(' ');
        int close = FindPathEnd(rest);
        if (close < 0)
        {
            error = "path must be enclosed in <>";
            return false;
        }
        if (!SmtpPath.TryParse(rest[..(close + 1)], allowNull, out var path, out error))
            return false;

        var tail = rest[(close + 1)..];
        if (tail.Length > 0 && tail[0] != ' ')
        {
            error = "expected a space before parameters";
            return false;
        }
        List<KeyValuePair<string, string?>>? parameters = null;
        foreach (var range in tail.Split(' '))
        {
            var item = tail[range];
            if (item.IsEmpty) continue;
            int eq = item.IndexOf('=');
            var key = eq < 0 ? item : item[..eq];
            var value = eq < 0 ? default : item[(eq + 1)..];
            if (key.Length == 0 || !IsKeyword(key))
            {
                error = $"bad parameter {item}";
                return false;
            }
            if (eq >= 0 && (value.Length == 0 || !IsValue(value)))
            {
                error = $"bad parameter value in {key}";
                return false;
            }
            parameters ??= new List<KeyValuePair<string, string?>>(2);
            parameters.Add(new(KeywordName(key), eq < 0 ? null : value.ToString()));
        }
        result = new PathArgument(path, parameters is null ? NoParameters : parameters);
        error = "";
        return true;
    }

    // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    private static bool IsKeyword(ReadOnlySpan<char> key)
    {
        if (!char.IsAsciiLetterOrDigit(key[0])) return false;
        foreach (char c in key)
            if (!char.IsAsciiLetterOrDigit(c) && c != '-') return false;
        return true;
    }

    // esmtp-value = 1*(%d33-60 / %d62-126): no "=", no controls, no space.
    private static bool IsValue(ReadOnlySpan<char> value)
    {
        foreach (char c in value)
            if (c is < '!' or '=' or '\x7f') return false;
        return true;
    }

    private static string KeywordName(ReadOnlySpan<char> key)
    {
        foreach (var known in KnownKeywords)
            if (key.Equals(known, StringComparison.OrdinalIgnoreCase)) return known;
        return key.ToString().ToUpperInvariant();
    }

    // Index of the '>' closing the path, skipping quoted strings in the local-part.
    private static int FindPathEnd(ReadOnlySpan<char> s)
    {
        if (s.Length == 0 || s[0] != '<') return -1;
        bool quoted = false;
        for (int i = 1; i < s.Length; i++)
        {
            char c = s[i];
            if (quoted && c == '\\') { i++; continue; }
            if (c == '"') quoted = !quoted;
            else if (c == '>' && !quoted) return i;
        }
        return -1;
    }
}
