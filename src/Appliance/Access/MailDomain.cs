// How recipient addresses are read before a relay decision (RFC 5321 §4.1.2, §3.6; RFC 1123
// §5.2.16 on '%' hacks). Normalisation is only case and one trailing dot; everything that could
// route a message elsewhere once it reached a "local" domain is reported, never rewritten.
using System.Text;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.Appliance.Access;

internal static class MailDomain
{
    // "Example.ORG." → "example.org". Domain comparison in SMTP is case-insensitive (RFC 5321 §2.4).
    // Nothing else: no trimming, so "example.org\u00A0" never compares equal to a local domain.
    public static string Normalize(string domain)
    {
        var d = domain;
        if (d.EndsWith('.')) d = d[..^1];
        return d.ToLowerInvariant();
    }

    // The local part as the mailbox owner sees it: quotes and backslash escapes removed
    // ("\"user@foreign\"" → "user@foreign").
    public static string Unquote(string localPart)
    {
        if (localPart.Length < 2 || localPart[0] != '"') return localPart;
        var sb = new StringBuilder(localPart.Length);
        for (int i = 1; i < localPart.Length - 1; i++)
        {
            char c = localPart[i];
            if (c == '\\' && i + 1 < localPart.Length - 1) c = localPart[++i];
            sb.Append(c);
        }
        return sb.ToString();
    }

    // Why this recipient could be relayed onwards by the server behind us, or null if it cannot.
    // '%' (user%foreign@local), '!' (foreign!user@local, UUCP bang paths) and '@'
    // ("user@foreign"@local, user@foreign@local) all name another destination inside the local part.
    public static string? RoutingTrick(SmtpPath path)
    {
        if (path.SourceRoute is not null) return "source routes are not accepted";
        var local = Unquote(path.LocalPart);
        if (local.AsSpan().IndexOfAny('@', '%', '!') >= 0) return "a routing character (@ % !) in the local part is not accepted";
        return null;
    }
}
