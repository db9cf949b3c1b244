using Portcullis.Appliance.Configuration;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.Appliance.Access;

// [relay] recipients_file: the recipients that exist behind the gateway, asked while the mail
// server cannot be (a queued transaction), as Postfix's relay_recipient_maps does for a backup
// MX. One address or @domain (every address there) per line, # comments. Matching ignores case
// in the whole address, as Postfix's table lookups do.
internal sealed class RecipientsFile
{
    private readonly HashSet<string> _addresses;
    private readonly HashSet<string> _domains;

    private RecipientsFile(HashSet<string> addresses, HashSet<string> domains)
    {
        _addresses = addresses;
        _domains = domains;
    }

    // A file that went away: nobody is refused (its absence is logged by the caller's check).
    public static readonly RecipientsFile Missing = new([], []) { AcceptsAll = true };

    public bool AcceptsAll { get; private init; }

    public int Count => _addresses.Count + _domains.Count;

    public bool Knows(SmtpPath recipient)
    {
        if (AcceptsAll || recipient.IsPostmaster) return true;
        var domain = MailDomain.Normalize(recipient.Domain);
        return _domains.Contains(domain) || _addresses.Contains(recipient.LocalPart + "@" + domain);
    }

    public static RecipientsFile Parse(string text)
    {
        var addresses = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var domains = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        int number = 0;
        foreach (var rawLine in text.Split('\n'))
        {
            number++;
            var line = rawLine.Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            if (line[0] == '@' && line.Length > 1 && !line.AsSpan(1).ContainsAny(" \t@<>"))
            {
                domains.Add(MailDomain.Normalize(line[1..]));
                continue;
            }
            var at = line.LastIndexOf('@');
            if (at <= 0 || at == line.Length - 1 || line.AsSpan().ContainsAny(" \t<>"))
                throw new FormatException($"line {number}: \"{line}\" is neither an address (user@example.org) nor @domain");
            addresses.Add(line[..at] + "@" + MailDomain.Normalize(line[(at + 1)..]));
        }
        return new RecipientsFile(addresses, domains);
    }

    // Re-read when it changes; null when the key is not set. A file that cannot be read at the
    // first use throws InvalidDataException naming it.
    public static WatchedFile<RecipientsFile>? Watch(RelaySection relay) =>
        relay.RecipientsFile.Length == 0 ? null
            : new WatchedFile<RecipientsFile>(relay.RecipientsFile, (path, _) => Parse(FileText.Read(path)), Missing, TimeSpan.FromSeconds(1));
}
