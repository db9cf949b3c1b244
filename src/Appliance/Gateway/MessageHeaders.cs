// Trace headers the gateway prepends to a message it forwards: Received (RFC 5321 §4.4,
// protocol names from RFC 3848) and X-Virus-Scanned / X-Virus-Status. They are written in
// front of the untouched content, so the rest of the message reaches the downstream
// byte-identical.
using System.Net;
using System.Text;
using Portcullis.Appliance.Messages;

namespace Portcullis.Appliance.Gateway;

internal static class MessageHeaders
{
    // What Clean replaces: the C0 and C1 controls (char.IsControl), DEL, and parentheses (a comment's ends).
    private static readonly System.Buffers.SearchValues<char> HeaderUnsafe = System.Buffers.SearchValues.Create(
        string.Concat(Enumerable.Range(0, 0x20).Concat(Enumerable.Range(0x7f, 0x21)).Select(c => (char)c)) + "()");

    // The thread's own builder, reused message after message.
    [ThreadStatic] private static StringBuilder? spare;

    public static byte[] Build(string hostname, string? helo, IPEndPoint? client, string protocol, string id,
        IReadOnlyList<string> recipients, DateTimeOffset time, string scanned, string? status,
        string? subject = null, string? authenticatedUser = null)
    {
        var sb = spare ?? new StringBuilder(512);
        spare = null;
        sb.Clear();
        sb.Append("Received: from ").Append(Clean(helo ?? "unknown"));
        if (client is null) sb.Append(" (unknown)");
        else sb.Append($" ([{client.Address}])");
        if (authenticatedUser is not null) sb.Append("\r\n\t(Authenticated sender: ").Append(Clean(authenticatedUser)).Append(')');
        sb.Append("\r\n\tby ").Append(hostname).Append(" (Portcullis) with ").Append(protocol).Append(" id ").Append(id);
        if (recipients.Count == 1) sb.Append("\r\n\tfor <").Append(Clean(recipients[0])).Append('>');
        sb.Append("; ").Append(Rfc5322Date(time)).Append("\r\n");
        sb.Append("X-Virus-Scanned: ").Append(scanned).Append("\r\n");
        if (status is not null) sb.Append("X-Virus-Status: ").Append(NoControls(status)).Append("\r\n");
        // Only for a tagged message that came without a Subject of its own.
        if (subject is not null) sb.Append("Subject: ").Append(NoControls(subject)).Append("\r\n");
        var bytes = Utf8(sb);
        if (sb.Capacity <= 4096) spare = sb;
        return bytes;
    }

    // The builder's text as UTF-8, without a string in between.
    private static byte[] Utf8(StringBuilder sb)
    {
        int count = 0;
        foreach (var chunk in sb.GetChunks()) count += Encoding.UTF8.GetByteCount(chunk.Span);
        var bytes = new byte[count];
        int at = 0;
        foreach (var chunk in sb.GetChunks()) at += Encoding.UTF8.GetBytes(chunk.Span, bytes.AsSpan(at));
        return bytes;
    }

    public static string Rfc5322Date(DateTimeOffset time) => MessageDate.Rfc5322(time);

    // A header value from a signature name or the configuration: one line, whatever it holds.
    private static string NoControls(string text)
    {
        if (!text.AsSpan().ContainsAnyInRange('\0', '\x1f') && !text.AsSpan().ContainsAnyInRange('\x7f', '\x9f')) return text;
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
            sb.Append(char.IsControl(c) ? '?' : c);
        return sb.ToString();
    }

    // Client-supplied text goes into a header: no CR, LF or other controls may survive.
    private static string Clean(string text)
    {
        if (!text.AsSpan().ContainsAny(HeaderUnsafe)) return text;
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
            sb.Append(char.IsControl(c) || c == '(' || c == ')' ? '?' : c);
        return sb.ToString();
    }
}
