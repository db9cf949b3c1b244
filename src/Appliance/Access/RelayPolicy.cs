// Who may send through the gateway, decided at the door (the downstream trusts only us):
//   at connect: a tcprules "deny" refuses the connection with a 554 banner;
//   at RCPT, in this order:
//     1. <postmaster> without a domain is always accepted (RFC 5321 §4.5.1);
//     2. a client with relay rights may send anywhere: trusted_networks, RELAYCLIENT from the
//        rules file, SMTP AUTH, or a fresh POP-before-SMTP entry;
//     3. anyone else may send only to local_domains (and local_domains_file), and only to plain
//        addresses there: source routes, address literals and '%', '!' or '@' inside the local
//        part are refused — they are how an open relay used to be abused through a "local" domain.
// Domains compare case-insensitively with one trailing dot removed.
using System.Net;
using Portcullis.Appliance.Configuration;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.Appliance.Access;

internal sealed class RelayPolicy : IRelayPolicy
{
    private static readonly TimeSpan Recheck = TimeSpan.Zero;   // one stat per use: cheap, and a change counts at once
    private readonly RelaySection _config;
    private readonly HashSet<string> _domains;
    private readonly WatchedFile<HashSet<string>>? _domainsFile;
    private readonly WatchedFile<TcpRules>? _rules;
    private readonly WatchedFile<PopBeforeSmtpList>? _pop;
    private readonly TimeProvider _time;

    // Throws InvalidDataException naming the file when a configured file cannot be read at start-up.
    public RelayPolicy(RelaySection config, TimeProvider? time = null, TimeSpan? recheck = null)
    {
        _config = config;
        _time = time ?? TimeProvider.System;
        var every = recheck ?? Recheck;
        _domains = new HashSet<string>(config.LocalDomains, StringComparer.Ordinal);
        if (config.LocalDomainsFile.Length > 0)
        {
            RequireFile(config.LocalDomainsFile, "local_domains_file");
            _domainsFile = new WatchedFile<HashSet<string>>(config.LocalDomainsFile,
                (path, _) => ParseDomains(FileText.Read(path)), [], every);
        }
        if (config.RulesFile.Length > 0)
        {
            RequireFile(config.RulesFile, "rules_file");
            bool cdb = config.RulesFile.EndsWith(".cdb", StringComparison.OrdinalIgnoreCase);
            _rules = new WatchedFile<TcpRules>(config.RulesFile,
                (path, _) => cdb ? TcpRules.FromCdb(File.ReadAllBytes(path)) : TcpRules.FromText(FileText.Read(path)),
                TcpRules.FromText(""), every);
        }
        if (config.PopBeforeSmtpFile.Length > 0)
        {
            // May not exist yet: the POP server writes it at the first login.
            _pop = new WatchedFile<PopBeforeSmtpList>(config.PopBeforeSmtpFile,
                (path, mtime) => PopBeforeSmtpList.Parse(FileText.Read(path), mtime), PopBeforeSmtpList.Empty, every);
        }
    }

    public SmtpReply? OnConnect(IPAddress? client, out ClientAccess access)
    {
        access = new ClientAccess(client, _config.TrustedNetworks.Contains(client), null);
        if (client is null || _rules is null) return null;
        var rule = _rules.Current.Match(client);
        access = access with { Rule = rule };
        return rule is { Deny: true }
            ? new SmtpReply(554, "5.7.1", $"Connections from {client} are not accepted here")
            : null;
    }

    public SmtpReply? OnRecipient(ClientAccess access, string? authenticatedUser, SmtpPath recipient, out string reason)
    {
        if (recipient.IsPostmaster) { reason = "postmaster"; return null; }
        reason = RelayRight(access, authenticatedUser) ?? "";
        if (reason.Length > 0) return null;

        if (MailDomain.RoutingTrick(recipient) is { } trick)
            return new SmtpReply(550, "5.7.1", $"Relaying denied: {trick}");
        var domain = recipient.Domain.StartsWith('[') ? null : MailDomain.Normalize(recipient.Domain);
        if (domain is null || !IsLocal(domain))
            return new SmtpReply(550, "5.7.1", $"Relaying denied: {recipient.Domain} is not a domain this gateway accepts mail for");
        reason = "local";
        return null;
    }

    private string? RelayRight(ClientAccess access, string? user)
    {
        if (user is not null) return "auth";
        if (access.Trusted) return "trusted";
        if (access.Rule is { RelayClient: true }) return "relayclient";
        if (_pop is not null && access.Address is not null
            && _pop.Current.Allows(access.Address, _time.GetUtcNow(), _config.PopBeforeSmtpTtl)) return "pop-before-smtp";
        return null;
    }

    public bool IsLocal(string normalizedDomain)
    {
        if (Matches(_domains, normalizedDomain)) return true;
        return _domainsFile is not null && Matches(_domainsFile.Current, normalizedDomain);
    }

    // "example.org" exactly, or ".example.org" for any subdomain of it.
    private static bool Matches(HashSet<string> domains, string domain)
    {
        if (domains.Contains(domain)) return true;
        for (int dot = domain.IndexOf('.'); dot >= 0; dot = domain.IndexOf('.', dot + 1))
        {
            if (domains.Contains(domain[dot..])) return true;
        }
        return false;
    }

    internal static HashSet<string> ParseDomains(string text)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var rawLine in text.Split('\n'))
        {
            var line = rawLine.Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            set.Add(MailDomain.Normalize(line));
        }
        return set;
    }

    private static void RequireFile(string path, string key)
    {
        if (!File.Exists(path)) throw new InvalidDataException($"[relay] {key} = {path}: the file does not exist");
    }
}
