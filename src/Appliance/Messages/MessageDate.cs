using System.Globalization;

namespace Portcullis.Appliance.Messages;

// The date-time of a header field (RFC 5322 §3.3), e.g. "Mon, 23 Nov 2026 18:39:33 +0000".
internal static class MessageDate
{
    public static string Rfc5322(DateTimeOffset time)
    {
        string zone = time.Offset < TimeSpan.Zero ? "-" : "+";
        var offset = time.Offset.Duration();
        return time.ToString("ddd, dd MMM yyyy HH:mm:ss ", CultureInfo.InvariantCulture)
            + zone + offset.Hours.ToString("00", CultureInfo.InvariantCulture) + offset.Minutes.ToString("00", CultureInfo.InvariantCulture);
    }
}
