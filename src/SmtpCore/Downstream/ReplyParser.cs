// Parses one SMTP reply (RFC 5321 §4.2) from buffered bytes; does no I/O.
//   Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF
// Codes are %x32-35 %x30-35 %x30-39 (§4.2); every line of a multi-line reply carries the same
// code. An enhanced status code (RFC 3463 §2, RFC 2034) is recognised when the text starts with
// "class.subject.detail" followed by a space or the end of the line, and class equals the
// code's first digit. A bare LF line ending is tolerated; CR or NUL inside a line is not.
// Incomplete leaves the reader where it was, so a caller can retry with more data.
// A server says the same lines to every connection ("2.0.0", "Ok", its EHLO keywords): short
// ASCII texts, and whole replies, come from small tables of recent ones rather than new each time.
using System.Buffers;
using System.Text;

namespace Portcullis.SmtpCore.Downstream;

internal enum ReplyParseResult
{
    Incomplete,
    Complete,
    Error,
}

internal static class ReplyParser
{
    // §4.5.3.1.5 says 512 octets per reply line; real servers send longer ones, so allow 8x.
    public const int MaxLineLength = 4096;

    // Bounds how much one reply may buffer (kept well under the inbound pipe's pause threshold).
    public const int MaxReplyLength = 64 * 1024;

    public static ReplyParseResult TryParseReply(ref SequenceReader<byte> reader, out SmtpReply? reply, out string? error)
    {
        reply = null;
        error = null;
        var probe = reader;
        long start = probe.Consumed;
        int code = 0;
        string? enhanced = null;
        string? first = null;               // most replies have one line: no list for them
        List<string>? lines = null;

        while (true)
        {
            var window = probe.UnreadSequence;
            if (window.Length > MaxLineLength) window = window.Slice(0, MaxLineLength);
            var lf = window.PositionOf((byte)'\n');
            if (lf is null)
            {
                if (window.Length < MaxLineLength) return ReplyParseResult.Incomplete;
                error = $"reply line longer than {MaxLineLength} bytes";
                return ReplyParseResult.Error;
            }

            var lineSequence = window.Slice(0, lf.Value);
            probe.Advance(lineSequence.Length + 1);
            // The client reads into one array, so a line in two segments is rare: copy it then.
            ReadOnlySpan<byte> line = lineSequence.IsSingleSegment ? lineSequence.FirstSpan : lineSequence.ToArray();
            if (line.Length > 0 && line[^1] == (byte)'\r') line = line[..^1];

            scoped ReadOnlySpan<byte> text;
            if (!TryParseLine(line, out int lineCode, out bool last, out text, out error))
                return ReplyParseResult.Error;
            if (code == 0)
            {
                code = lineCode;
                int length = EnhancedCodeLength(text, code);
                if (length > 0)
                {
                    enhanced = Text(text[..length]);
                    text = text[length..];
                }
            }
            else if (lineCode != code)
            {
                error = $"multi-line reply mixes codes {code} and {lineCode}";
                return ReplyParseResult.Error;
            }
            else if (enhanced is not null)
            {
                // Continuation lines usually repeat the enhanced code; strip it only when it matches.
                int length = EnhancedCodeLength(text, code);
                if (length > 0 && Ascii.Equals(text[..length], enhanced)) text = text[length..];
            }
            if (enhanced is not null && !text.IsEmpty && text[0] == (byte)' ') text = text[1..];

            var lineText = Text(text);
            if (first is null) first = lineText;
            else (lines ??= SpareLines(first)).Add(lineText);
            if (probe.Consumed - start > MaxReplyLength)
            {
                error = $"reply longer than {MaxReplyLength} bytes";
                return ReplyParseResult.Error;
            }
            if (last)
            {
                reply = Shared(code, enhanced, first, lines);
                if (lines is not null)
                {
                    lines.Clear();
                    spareLines = lines;
                }
                reader = probe;
                return ReplyParseResult.Complete;
            }
        }
    }

    // A multi-line reply collects its lines in the thread's own list (an error drops it; the next makes one).
    [ThreadStatic] private static List<string>? spareLines;

    private static List<string> SpareLines(string first)
    {
        var lines = spareLines ?? new List<string>(16);
        spareLines = null;
        lines.Add(first);
        return lines;
    }

    // Whole replies repeat too (the banner, EHLO, "250 2.1.0 Ok"): a reply equal to a recent one is
    // that same object (SmtpReply never changes once made).
    private static readonly SmtpReply?[] RecentReplies = new SmtpReply?[64];

    private static SmtpReply Shared(int code, string? enhanced, string first, List<string>? more)
    {
        var hash = new HashCode();
        hash.Add(code);
        hash.Add(enhanced);
        if (more is null) hash.Add(first);
        else foreach (var line in more) hash.Add(line);
        ref SmtpReply? slot = ref RecentReplies[(uint)hash.ToHashCode() % (uint)RecentReplies.Length];
        var known = Volatile.Read(ref slot);
        if (known is not null && known.Code == code && known.Enhanced == enhanced && SameLines(known.Lines, first, more)) return known;
        var made = more is null ? new SmtpReply(code, enhanced, first) : new SmtpReply(code, enhanced, [.. more]);
        Volatile.Write(ref slot, made);
        return made;
    }

    private static bool SameLines(IReadOnlyList<string> known, string first, List<string>? more)
    {
        if (more is null) return known.Count == 1 && known[0] == first;
        if (known.Count != more.Count) return false;
        for (int i = 0; i < more.Count; i++)
            if (known[i] != more[i]) return false;
        return true;
    }

    private const int MaxRecentLength = 64;
    private static readonly string?[] Recent = new string?[256];

    // A race between two sessions costs at most a miss: a slot only ever holds a whole string.
    private static string Text(ReadOnlySpan<byte> text)
    {
        if (text.IsEmpty) return "";
        if (text.Length > MaxRecentLength || !Ascii.IsValid(text)) return Encoding.UTF8.GetString(text);
        uint hash = 2166136261;   // FNV-1a
        foreach (byte b in text) hash = (hash ^ b) * 16777619;
        ref string? slot = ref Recent[hash % (uint)Recent.Length];
        var known = Volatile.Read(ref slot);
        if (known is not null && Ascii.Equals(text, known)) return known;
        var made = Encoding.ASCII.GetString(text);
        Volatile.Write(ref slot, made);
        return made;
    }

    private static bool TryParseLine(ReadOnlySpan<byte> line, out int code, out bool last, out ReadOnlySpan<byte> text, out string? error)
    {
        code = 0;
        last = true;
        text = default;
        error = null;
        if (line.Length < 3 || line[0] is < (byte)'2' or > (byte)'5' || line[1] is < (byte)'0' or > (byte)'5'
            || line[2] is < (byte)'0' or > (byte)'9')
        {
            error = "reply line does not start with a reply code";
            return false;
        }
        code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (line.Length > 3)
        {
            if (line[3] == (byte)'-') last = false;
            else if (line[3] != (byte)' ')
            {
                error = "reply code not followed by a space or '-'";
                return false;
            }
            text = line[4..];
        }
        if (text.IndexOfAny((byte)'\r', (byte)'\0') >= 0)
        {
            error = "reply line contains CR or NUL";
            return false;
        }
        return true;
    }

    // Length of a leading "c.sss.ddd" (RFC 3463: 1-3 digit subject and detail) that ends at a space
    // or the end of the text and whose class matches the reply; 0 when there is none.
    private static int EnhancedCodeLength(ReadOnlySpan<byte> text, int code)
    {
        if (text.Length < 5 || text[0] != (byte)('0' + code / 100) || text[1] != (byte)'.') return 0;
        int i = 2;
        for (int part = 0; part < 2; part++)
        {
            int digits = 0;
            while (i < text.Length && digits < 4 && char.IsAsciiDigit((char)text[i])) { i++; digits++; }
            if (digits is 0 or > 3) return 0;
            if (part == 0)
            {
                if (i >= text.Length || text[i] != (byte)'.') return 0;
                i++;
            }
        }
        return i == text.Length || text[i] == (byte)' ' ? i : 0;
    }
}
