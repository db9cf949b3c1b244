using System.Text;
using System.Text.Unicode;
using MimeKit.Utils;

namespace Portcullis.Appliance.Policy;

// Reads the MIME structure of a message (RFC 2045, 2046, 2183, 2231) straight from the bytes
// libclamav has mapped for its own pass, to fill the gap libclamav leaves. Measured with libclamav
// 1.4.6 (Debian 12), clcb_file_inspection and clcb_meta report:
//   - every MIME part's filename (Content-Disposition filename, else Content-Type name; RFC 2047
//     and RFC 2231 decoded; quotes turned into '_'); "attachment" for an unnamed part;
//   - when a field or parameter is given twice, only the first (clients may show the other one);
//   - no declared Content-Type at all, only the type by magic;
//   - a base64 message/rfc822 decoded as a new file "textportion" of type MAIL (checked here too);
//     a quoted-printable one is not decoded but parsed as it is, so names come out mangled
//     ("3D_evil.exe_"); 7bit message/rfc822 is parsed in place;
//   - uuencoded content in a text body as a file named clamav-<hex>.tmp: the name after
//     "begin 644" is lost;
//   - zip (at any depth, after a stub, under any name), tar, gzip, 7z members with their names.
// So this check adds exactly: the declared Content-Type of every part (banned_content_types), the
// names in the headers and in uuencode "begin" lines, and Banned.MalformedMime for what clients may
// read differently: a first line that is not a header field, a field that is not "name: value",
// Content-Type, Content-Disposition or Content-Transfer-Encoding twice in one header block, a
// parameter twice, a multipart without a usable boundary or without any part, a message/rfc822
// part in an encoding other than 7bit/8bit/binary/base64, more than MaxDepth nested entities.
// Nothing is copied but the three fields above (each at most MaxFieldLength); every other header
// line, however long, is only skipped. Work is linear in the size times the nesting depth.
public static class MimeStructureCheck
{
    public const string Malformed = "Banned.MalformedMime";

    // More parts than libclamav's max_files: libclamav would parse them all (its MIME parser holds
    // the whole tree; 300,000 tiny parts cost it ~40 s of CPU and ~120 MB) only to stop at the limit.
    public const string TooManyParts = "Heuristics.Limits.Exceeded.MaxFiles";

    public const int MaxDepth = 64;

    // Longest Content-Type, Content-Disposition or Content-Transfer-Encoding kept, folded lines joined.
    public const int MaxFieldLength = 64 * 1024;

    // Checks a whole message. strictStart: its first line must be a header field (the message as
    // received; an embedded message libclamav decoded is only checked for ambiguity).
    // maxParts: entities allowed in the whole message, 0 for no limit (TooManyParts past it).
    public static string? CheckMessage(ReadOnlySpan<byte> message, BannedAttachments rules, bool strictStart = true, int maxParts = 0)
    {
        if (strictStart && !StartsWithField(message))
        {
            return Malformed;
        }

        var parts = maxParts > 0 ? maxParts : int.MaxValue;
        return CheckEntity(message, rules, 0, ref parts);
    }

    private static bool StartsWithField(ReadOnlySpan<byte> message)
    {
        var line = FirstLine(message);
        var colon = line.IndexOf((byte)':');
        return colon > 0 && IsFieldName(line[..colon]);
    }

    private static bool IsFieldName(ReadOnlySpan<byte> name)
    {
        // RFC 5322 §4.5.3 (obsolete syntax): white space may come before the colon.
        name = name.TrimEnd(" \t"u8);
        return name.Length > 0 && IsFieldNameText(name);
    }

    private static string? CheckEntity(ReadOnlySpan<byte> entity, BannedAttachments rules, int depth, ref int parts)
    {
        if (depth > MaxDepth)
        {
            return Malformed;
        }

        if (--parts < 0)
        {
            return TooManyParts;
        }

        var rest = entity;
        if (ReadHeader(ref rest, out var header) is { } bad)
        {
            return bad;
        }

        var type = ParseValue(header.ContentType, out var typeParameters);
        if (typeParameters is null)
        {
            return Malformed;
        }

        ParseValue(header.Disposition, out var dispositionParameters);
        if (dispositionParameters is null)
        {
            return Malformed;
        }

        if (type.Length == 0 || !type.Contains('/'))
        {
            type = "text/plain"; // RFC 2045 §5.2: a missing or unreadable type is text/plain
        }

        if (HasParameter(dispositionParameters, "filename") || HasParameter(typeParameters, "name"))
        {
            foreach (var name in FileNames(dispositionParameters, "filename").Concat(FileNames(typeParameters, "name")))
            {
                if (rules.CheckFileName(name) is { } banned)
                {
                    return banned;
                }
            }
        }

        if (rules.CheckContentType(type) is { } bannedType)
        {
            return bannedType;
        }

        var encoding = header.Encoding?.Trim().ToLowerInvariant() ?? "7bit";
        if (type.StartsWith("multipart/", StringComparison.Ordinal))
        {
            return typeParameters.TryGetValue("boundary", out var boundary) && boundary.Length is > 0 and <= 200
                ? CheckParts(rest, Encoding.UTF8.GetBytes("--" + boundary), rules, depth, ref parts)
                : Malformed;
        }

        if (type is "message/rfc822" or "message/global")
        {
            return encoding switch
            {
                "7bit" or "8bit" or "binary" => CheckEntity(rest, rules, depth + 1, ref parts),
                // libclamav decodes it and reports it as a MAIL file, checked on its own.
                "base64" => null,
                _ => Malformed,
            };
        }

        if (type.StartsWith("text/", StringComparison.Ordinal) && encoding is "7bit" or "8bit" or "binary")
        {
            return CheckUuencodeNames(rest, rules);
        }

        return null;
    }

    // The body of a multipart: every part between delimiter lines (RFC 2046 §5.1.1).
    private static string? CheckParts(ReadOnlySpan<byte> body, ReadOnlySpan<byte> delimiter, BannedAttachments rules, int depth, ref int parts)
    {
        var partStart = -1;
        var found = 0;
        var offset = 0;
        while (offset <= body.Length)
        {
            var at = FindDelimiter(body, delimiter, offset, out var closing, out var next);
            if (at < 0)
            {
                break;
            }

            if (partStart >= 0)
            {
                // The CRLF in front of a delimiter belongs to the delimiter.
                var end = at > partStart && body[at - 1] == '\n' ? at - 1 : at;
                if (end > partStart && body[end - 1] == '\r')
                {
                    end--;
                }

                found++;
                if (CheckEntity(body[partStart..Math.Max(partStart, end)], rules, depth + 1, ref parts) is { } detection)
                {
                    return detection;
                }
            }

            if (closing)
            {
                partStart = -1;
                break;
            }

            partStart = next;
            offset = next;
        }

        // An unterminated last part runs to the end of the body.
        if (partStart >= 0)
        {
            found++;
            if (CheckEntity(body[partStart..], rules, depth + 1, ref parts) is { } detection)
            {
                return detection;
            }
        }

        return found == 0 ? Malformed : null;
    }

    // Index of the next delimiter line at or after offset, or -1. next: where the line after it starts.
    private static int FindDelimiter(ReadOnlySpan<byte> body, ReadOnlySpan<byte> delimiter, int offset, out bool closing, out int next)
    {
        closing = false;
        next = body.Length;
        var from = offset;
        while (from < body.Length)
        {
            int at;
            if (from == 0 && body.StartsWith(delimiter))
            {
                at = 0;
            }
            else
            {
                var found = body[from..].IndexOf(delimiter);
                if (found < 0)
                {
                    return -1;
                }

                at = from + found;
                if (at > 0 && body[at - 1] != '\n')
                {
                    from = at + 1;
                    continue;
                }
            }

            var line = FirstLine(body[at..]);
            var tail = line[delimiter.Length..];
            closing = tail.StartsWith("--"u8);
            if (closing)
            {
                tail = tail[2..];
            }

            // Only transport padding may follow; anything else is a line that merely starts like one.
            if (tail.TrimEnd(" \t\r"u8).Length == 0)
            {
                var lineEnd = body[at..].IndexOf((byte)'\n');
                next = lineEnd < 0 ? body.Length : at + lineEnd + 1;
                return at;
            }

            from = at + 1;
        }

        return -1;
    }

    // "begin <mode> <name>" lines of uuencoded files inside a text body (libclamav decodes them but
    // does not keep the name).
    private static string? CheckUuencodeNames(ReadOnlySpan<byte> body, BannedAttachments rules)
    {
        var rest = body;
        while (!rest.IsEmpty)
        {
            var at = rest.IndexOf("begin "u8);
            if (at < 0)
            {
                return null;
            }

            if (at == 0 || rest[at - 1] == '\n')
            {
                var line = FirstLine(rest[at..])[6..];
                var digits = 0;
                while (digits < line.Length && line[digits] is >= (byte)'0' and <= (byte)'7')
                {
                    digits++;
                }

                if (digits is 3 or 4 && digits < line.Length && line[digits] == ' '
                    && rules.CheckFileName(Encoding.UTF8.GetString(line[(digits + 1)..]).Trim()) is { } banned)
                {
                    return banned;
                }
            }

            rest = rest[(at + 6)..];
        }

        return null;
    }

    private struct MimeHeader
    {
        public string? ContentType;
        public string? Disposition;
        public string? Encoding;
    }

    // Reads one header block and leaves rest at the body. Returns Malformed or null.
    private static string? ReadHeader(ref ReadOnlySpan<byte> rest, out MimeHeader header)
    {
        header = default;
        StringBuilder? current = null;
        var which = 0; // 1 Content-Type, 2 Content-Disposition, 3 Content-Transfer-Encoding
        var first = true;
        while (!rest.IsEmpty)
        {
            var line = FirstLine(rest);
            var lineEnd = rest.IndexOf((byte)'\n');
            var afterLine = lineEnd < 0 ? rest.Length : lineEnd + 1;
            if (line.Length == 0)
            {
                rest = rest[afterLine..];
                break;
            }

            if (line[0] is (byte)' ' or (byte)'\t')
            {
                if (first)
                {
                    return Malformed; // a continuation with nothing to continue
                }

                if (current is not null && Append(current, line) is { } tooLong)
                {
                    return tooLong;
                }
            }
            else
            {
                Store(ref header, which, current);
                current = null;
                which = 0;
                var colon = line.IndexOf((byte)':');
                if (colon <= 0 || !IsFieldName(line[..colon]))
                {
                    return Malformed;
                }

                var name = line[..colon].TrimEnd(" \t"u8);
                which = name.Length switch
                {
                    12 when Ascii.EqualsIgnoreCase(name, "Content-Type"u8) => 1,
                    19 when Ascii.EqualsIgnoreCase(name, "Content-Disposition"u8) => 2,
                    25 when Ascii.EqualsIgnoreCase(name, "Content-Transfer-Encoding"u8) => 3,
                    _ => 0,
                };
                if (which != 0)
                {
                    var seen = which switch { 1 => header.ContentType, 2 => header.Disposition, _ => header.Encoding };
                    if (seen is not null)
                    {
                        return Malformed; // the same field twice: clients pick different ones
                    }

                    current = new StringBuilder();
                    if (Append(current, line[(colon + 1)..]) is { } tooLong)
                    {
                        return tooLong;
                    }

                    // Marks the field as seen even before its value is complete.
                    Store(ref header, which, current);
                }
            }

            first = false;
            rest = rest[afterLine..];
        }

        Store(ref header, which, current);
        return null;
    }

    private static string? Append(StringBuilder value, ReadOnlySpan<byte> text)
    {
        if (value.Length + text.Length > MaxFieldLength)
        {
            return Malformed;
        }

        value.Append(Encoding.UTF8.GetString(text));
        return null;
    }

    private static void Store(ref MimeHeader header, int which, StringBuilder? value)
    {
        if (value is null)
        {
            return;
        }

        switch (which)
        {
            case 1: header.ContentType = value.ToString(); break;
            case 2: header.Disposition = value.ToString(); break;
            case 3: header.Encoding = value.ToString(); break;
        }
    }

    // Never added to: a field that is absent has no parameters.
    private static readonly Dictionary<string, string> NoParameters = new(StringComparer.Ordinal);

    // The value before the first ';' (lowercase) and its parameters by lowercase name; parameters is
    // null when one is given twice. RFC 2231 sections (name*0, name*1*) are distinct names.
    private static string ParseValue(string? field, out Dictionary<string, string>? parameters)
    {
        if (field is null)
        {
            parameters = NoParameters;
            return "";
        }

        parameters = new Dictionary<string, string>(StringComparer.Ordinal);

        var segments = SplitParameters(field);
        var value = segments[0].Trim().ToLowerInvariant();
        for (var i = 1; i < segments.Count; i++)
        {
            var segment = segments[i];
            var equals = segment.IndexOf('=');
            if (equals <= 0)
            {
                continue;
            }

            var name = segment[..equals].Trim().ToLowerInvariant();
            var raw = segment[(equals + 1)..].Trim();
            if (!parameters.TryAdd(name, Unquote(raw)))
            {
                parameters = null;
                return value;
            }
        }

        return value;
    }

    // Splits at ';' outside quoted strings.
    private static List<string> SplitParameters(string field)
    {
        var segments = new List<string>();
        var start = 0;
        var quoted = false;
        for (var i = 0; i < field.Length; i++)
        {
            var c = field[i];
            if (quoted && c == '\\')
            {
                i++;
            }
            else if (c == '"')
            {
                quoted = !quoted;
            }
            else if (c == ';' && !quoted)
            {
                segments.Add(field[start..i]);
                start = i + 1;
            }
        }

        segments.Add(field[start..]);
        return segments;
    }

    private static string Unquote(string raw)
    {
        if (raw.Length < 2 || raw[0] != '"')
        {
            return raw;
        }

        var text = new StringBuilder(raw.Length);
        for (var i = 1; i < raw.Length; i++)
        {
            var c = raw[i];
            if (c == '"')
            {
                break;
            }

            if (c == '\\' && i + 1 < raw.Length)
            {
                c = raw[++i];
            }

            text.Append(c);
        }

        return text.ToString();
    }

    // Whether any parameter is `key` or one of its RFC 2231 forms (most parts have no name at all).
    private static bool HasParameter(Dictionary<string, string> parameters, string key)
    {
        foreach (var name in parameters.Keys)
        {
            if (name.StartsWith(key, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    // Every name a client may show for parameter `key`: the plain value (RFC 2047 decoded), the
    // RFC 2231 extended value, and the RFC 2231 sections joined.
    private static IEnumerable<string> FileNames(Dictionary<string, string> parameters, string key)
    {
        if (parameters.TryGetValue(key, out var plain))
        {
            yield return plain.Contains("=?", StringComparison.Ordinal) ? Rfc2047.DecodeText(Encoding.UTF8.GetBytes(plain)) : plain;
        }

        if (parameters.TryGetValue(key + "*", out var extended))
        {
            yield return DecodeExtended(extended, withCharset: true);
        }

        var joined = new StringBuilder();
        for (var section = 0; ; section++)
        {
            if (parameters.TryGetValue($"{key}*{section}*", out var encoded))
            {
                joined.Append(DecodeExtended(encoded, withCharset: section == 0));
            }
            else if (parameters.TryGetValue($"{key}*{section}", out var text))
            {
                joined.Append(text);
            }
            else
            {
                break;
            }
        }

        if (joined.Length > 0)
        {
            yield return joined.ToString();
        }
    }

    // charset'language'%XX-encoded (RFC 2231 §4). Only the extension matters here, which is ASCII in
    // any charset a client will honour, so bytes that are not UTF-8 are read as Latin-1.
    private static string DecodeExtended(string value, bool withCharset)
    {
        if (withCharset)
        {
            var firstQuote = value.IndexOf('\'');
            var secondQuote = firstQuote < 0 ? -1 : value.IndexOf('\'', firstQuote + 1);
            if (secondQuote >= 0)
            {
                value = value[(secondQuote + 1)..];
            }
        }

        var bytes = new List<byte>(value.Length);
        for (var i = 0; i < value.Length; i++)
        {
            if (value[i] == '%' && i + 2 < value.Length && Uri.IsHexDigit(value[i + 1]) && Uri.IsHexDigit(value[i + 2]))
            {
                bytes.Add(Convert.ToByte(value.Substring(i + 1, 2), 16));
                i += 2;
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(value[i].ToString()));
            }
        }

        var array = bytes.ToArray();
        return Utf8.IsValid(array) ? Encoding.UTF8.GetString(array) : Encoding.Latin1.GetString(array);
    }

    // RFC 5322 §3.6.8: printable US-ASCII except colon.
    private static bool IsFieldNameText(ReadOnlySpan<byte> name)
    {
        foreach (var b in name)
        {
            if (b is < 33 or > 126)
            {
                return false;
            }
        }

        return true;
    }

    // The first line without its CR LF.
    private static ReadOnlySpan<byte> FirstLine(ReadOnlySpan<byte> text)
    {
        var end = text.IndexOf((byte)'\n');
        var line = end < 0 ? text : text[..end];
        return line.EndsWith("\r"u8) ? line[..^1] : line;
    }
}
