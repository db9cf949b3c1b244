// POP-before-SMTP: a POP/IMAP server's login hook writes the client's address to a file, and
// that address may relay for a while. One entry a line: "192.0.2.7" or "192.0.2.7 1700000000"
// (unix time of the login); without a time the file's modification time counts. '#' starts a comment.
using System.Globalization;
using System.Net;

namespace Portcullis.Appliance.Access;

internal sealed class PopBeforeSmtpList
{
    private readonly Dictionary<IPAddress, DateTimeOffset> _logins;

    private PopBeforeSmtpList(Dictionary<IPAddress, DateTimeOffset> logins) => _logins = logins;

    public static PopBeforeSmtpList Empty { get; } = new([]);

    public int Count => _logins.Count;

    // Lines that are not an address are skipped: the file is written by another program.
    public static PopBeforeSmtpList Parse(string text, DateTimeOffset fileTime)
    {
        var logins = new Dictionary<IPAddress, DateTimeOffset>();
        foreach (var rawLine in text.Split('\n'))
        {
            var line = rawLine.Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            var fields = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (!IPAddress.TryParse(fields[0], out var address)) continue;
            if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
            var time = fileTime;
            if (fields.Length > 1)
            {
                if (!long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out long unix)) continue;
                time = DateTimeOffset.FromUnixTimeSeconds(Math.Min(unix, 253402300799));
            }
            // The newest login of an address counts.
            if (!logins.TryGetValue(address, out var seen) || seen < time) logins[address] = time;
        }
        return new PopBeforeSmtpList(logins);
    }

    private static readonly TimeSpan ClockSkew = TimeSpan.FromMinutes(5);

    public bool Allows(IPAddress address, DateTimeOffset now, TimeSpan ttl)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        // A login stamped in the future (a wrong clock in the hook) grants nothing, rather than
        // relay rights until that time plus the ttl.
        return _logins.TryGetValue(address, out var login) && login <= now + ClockSkew && now - login <= ttl;
    }
}
