// What the downstream server offered in its EHLO reply (RFC 5321 §4.1.1.1: one keyword and its
// parameters per line after the greeting line). Keywords: PIPELINING (RFC 2920), CHUNKING
// (RFC 3030), DSN (RFC 3461), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), STARTTLS (RFC 3207),
// ENHANCEDSTATUSCODES (RFC 2034), SIZE (RFC 1870), AUTH (RFC 4954), XFORWARD and XCLIENT (Postfix:
// the attribute names the server accepts follow the keyword).
namespace Portcullis.SmtpCore.Downstream;

public sealed class DownstreamCapabilities
{
    private static readonly IReadOnlySet<string> EmptySet = new HashSet<string>(StringComparer.OrdinalIgnoreCase);

    public static DownstreamCapabilities None { get; } = new();

    public bool Pipelining { get; init; }
    public bool Chunking { get; init; }
    public bool Dsn { get; init; }
    public bool EightBitMime { get; init; }
    public bool SmtpUtf8 { get; init; }
    public bool StartTls { get; init; }
    public bool EnhancedStatusCodes { get; init; }

    // Null when SIZE is absent or declares no fixed limit ("SIZE" or "SIZE 0", RFC 1870 §4).
    public long? MaxSize { get; init; }

    public IReadOnlySet<string> XForward { get; init; } = EmptySet;
    public IReadOnlySet<string> XClient { get; init; } = EmptySet;
    public IReadOnlySet<string> AuthMechanisms { get; init; } = EmptySet;

    // Every keyword (upper case) with its parameter text, "" when it has none.
    public IReadOnlyDictionary<string, string> Raw { get; init; } = new Dictionary<string, string>();

    // The server answers every connection's EHLO alike: the last parse is handed out again for the
    // same lines (nothing changes a DownstreamCapabilities once built).
    private sealed record LastParse(SmtpReply Reply, DownstreamCapabilities Capabilities);
    private static LastParse? last;

    public static DownstreamCapabilities Parse(SmtpReply ehloReply)
    {
        ArgumentNullException.ThrowIfNull(ehloReply);
        if (!ehloReply.IsPositiveCompletion) return None;
        if (Volatile.Read(ref last) is { } earlier && SameLines(earlier.Reply, ehloReply)) return earlier.Capabilities;
        var parsed = ParseLines(ehloReply);
        Volatile.Write(ref last, new LastParse(ehloReply, parsed));
        return parsed;
    }

    private static bool SameLines(SmtpReply a, SmtpReply b)
    {
        if (a.Lines.Count != b.Lines.Count) return false;
        for (int i = 0; i < a.Lines.Count; i++)
            if (!string.Equals(a.Lines[i], b.Lines[i], StringComparison.Ordinal)) return false;
        return true;
    }

    private static DownstreamCapabilities ParseLines(SmtpReply ehloReply)
    {

        var raw = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var xforward = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var xclient = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var auth = new HashSet<string>(StringComparer.OrdinalIgnoreCase);

        // Line 0 is "domain greeting"; capabilities start on line 1.
        for (int i = 1; i < ehloReply.Lines.Count; i++)
        {
            string line = ehloReply.Lines[i].Trim();
            if (line.Length == 0) continue;
            int space = line.IndexOf(' ');
            string keyword = (space < 0 ? line : line[..space]).ToUpperInvariant();
            string parameters = space < 0 ? "" : line[(space + 1)..].Trim();

            // Some old servers still send "AUTH=LOGIN PLAIN".
            if (keyword.StartsWith("AUTH=", StringComparison.Ordinal))
            {
                AddWords(auth, keyword[5..] + " " + parameters);
                continue;
            }

            raw[keyword] = raw.TryGetValue(keyword, out var earlier) ? (earlier + " " + parameters).Trim() : parameters;
            if (keyword == "AUTH") AddWords(auth, parameters);
            if (keyword == "XFORWARD") AddWords(xforward, parameters);
            if (keyword == "XCLIENT") AddWords(xclient, parameters);
        }

        long? maxSize = null;
        if (raw.TryGetValue("SIZE", out var size) && long.TryParse(size, System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture, out long limit) && limit > 0)
            maxSize = limit;

        return new DownstreamCapabilities
        {
            Pipelining = raw.ContainsKey("PIPELINING"),
            Chunking = raw.ContainsKey("CHUNKING"),
            Dsn = raw.ContainsKey("DSN"),
            EightBitMime = raw.ContainsKey("8BITMIME"),
            SmtpUtf8 = raw.ContainsKey("SMTPUTF8"),
            StartTls = raw.ContainsKey("STARTTLS"),
            EnhancedStatusCodes = raw.ContainsKey("ENHANCEDSTATUSCODES"),
            MaxSize = maxSize,
            XForward = xforward,
            XClient = xclient,
            AuthMechanisms = auth,
            Raw = raw,
        };
    }

    private static void AddWords(HashSet<string> set, string words)
    {
        foreach (var word in words.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            set.Add(word.ToUpperInvariant());
    }
}
