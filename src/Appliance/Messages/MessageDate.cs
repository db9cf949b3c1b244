using System.Globalization;

namespace Portcullis.Appliance.Messages;

// The date-time of a header field (RFC 5322 §3.3), e.g. "Mon, 23 Nov 2026 18:39:33 +0000".
internal static class MessageDate
{
    // Every message of the same second gets the same text: the last one made is kept.
    private sealed record Made(long Second, TimeSpan Offset, string Text);
    private static Made? last;

    public static string Rfc5322(DateTimeOffset time)
    {
        long second = time.Ticks / TimeSpan.TicksPerSecond;
        if (Volatile.Read(ref last) is { } made && made.Second == second && made.Offset == time.Offset) return made.Text;
        var text = Format(time);
        Volatile.Write(ref last, new Made(second, time.Offset, text));
        return text;
    }

    private static string Format(DateTimeOffset time)
    {
        string zone = time.Offset < TimeSpan.Zero ? "-" : "+";
        var offset = time.Offset.Duration();
        return time.ToString("ddd, dd MMM yyyy HH:mm:ss ", CultureInfo.InvariantCulture)
            + zone + offset.Hours.ToString("00", CultureInfo.InvariantCulture) + offset.Minutes.ToString("00", CultureInfo.InvariantCulture);
    }
}
