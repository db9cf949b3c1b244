// Who the real client is, told to the downstream before MAIL. With XCLIENT (Postfix
// XCLIENT_README, `[general] smtp_server_xclient = auto` and offered in the EHLO reply) the
// downstream takes over the client's address, port, HELO, protocol, SASL login and the address
// it connected to, and applies its own restrictions to them ("post-filter access control").
// Sent once per downstream connection, and again when those attributes change (a new EHLO, an
// AUTH, a pooled connection serving another client): on the same connection while it still
// offers XCLIENT, else on a fresh one, because Postfix judges smtpd_authorized_xclient_hosts
// again for the client it was told about and usually stops offering XCLIENT after ADDR.
// Replies: 220 accepted; 421 breaks the connection (451 to the client, nothing is lost); 501,
// 503 and 550 refuse the command itself (logged, XFORWARD as before); any other 4xx/5xx is the
// downstream's verdict on the real client and answers the client's MAIL.
// No DNS lookups here: NAME goes as [UNAVAILABLE] (README: no reject_unknown_client_hostname behind us).
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal static class ClientIdentity
{
    private const string Unavailable = "[UNAVAILABLE]";

    // The connection MAIL goes on; ByXClient: the downstream knows the client (XFORWARD is not
    // needed); Refusal: the downstream's answer to this client, to give instead of sending MAIL.
    public readonly record struct Presented(DownstreamClient Downstream, bool ByXClient, SmtpReply? Refusal);

    // reconnect: a fresh connection from the lease (a static lambda, so the common path makes no closure).
    // Pooled builder: once per message on a shared connection, awaited once.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public static async ValueTask<Presented> PresentAsync(GatewayContext ctx, SmtpSession session, DownstreamClient downstream,
        DownstreamLease lease, Func<DownstreamLease, CancellationToken, ValueTask<DownstreamClient>> reconnect, CancellationToken ct)
    {
        if (!ctx.Config.General.SmtpServerXClient) return new Presented(downstream, false, null);
        if (downstream.XClientRefusal is { } earlier)
            return RefusesCommand(earlier) ? new Presented(downstream, false, null) : new Presented(downstream, true, Answer(earlier));
        var attributes = XClientAttributes(session);
        if (downstream.XClientAttributes is { } sent)
        {
            if (Same(sent, attributes)) return new Presented(downstream, true, null);
            // The client changed (EHLO again, AUTH): say so again, on a fresh connection when needed.
            if (downstream.Capabilities.XClient.Count == 0) downstream = await reconnect(lease, ct).ConfigureAwait(false);
        }
        if (downstream.Capabilities.XClient.Count == 0) return new Presented(downstream, false, null);

        var reply = await downstream.XClientAsync(attributes, session.HeloName, ct).ConfigureAwait(false);
        if (reply is null || reply.IsPositiveCompletion) return new Presented(downstream, reply is not null, null);
        if (!downstream.IsBroken && RefusesCommand(reply))
        {
            Log.Warn($"session={session.Id} downstream refused XCLIENT, falling back to XFORWARD: {reply}");
            return new Presented(downstream, false, null);
        }
        // The downstream judged the real client (its client or HELO restrictions): its answer stands.
        Log.Info($"session={session.Id} client={GatewaySession.ClientAddress(session)} refused by the downstream after XCLIENT: {reply}");
        return new Presented(downstream, true, Answer(reply));
    }

    // XCLIENT_README's codes for a refused command, as opposed to a verdict on the client.
    private static bool RefusesCommand(SmtpReply reply) => reply.Code is 501 or 503 or 550;

    private static SmtpReply Answer(SmtpReply reply) => reply.IsTransient || reply.IsPermanent
        ? reply
        : new SmtpReply(451, "4.3.0", $"Unexpected reply from the mail server behind this gateway ({reply.Code})");

    // XCLIENT_README and XFORWARD_README: addresses without brackets, IPv6 with "IPV6:", [UNAVAILABLE] when unknown.
    public static KeyValuePair<string, string>[] XClientAttributes(SmtpSession session)
    {
        var client = session.RemoteEndPoint as IPEndPoint;
        var local = Ours(session.LocalEndPoint as IPEndPoint);
        return
        [
            new("HELO", session.HeloName ?? Unavailable),
            new("PROTO", session.Extended ? "ESMTP" : "SMTP"),
            new("LOGIN", session.AuthenticatedUser ?? Unavailable),
            new("NAME", Unavailable),
            new("ADDR", FormatAddress(client?.Address)),
            new("PORT", client is null ? Unavailable : client.Port.ToString(CultureInfo.InvariantCulture)),
            new("DESTADDR", local.Address),
            new("DESTPORT", local.Port),
        ];
    }

    // The gateway's side is the same for every client of a listener: formatted when it changes.
    private static OurSide? lastOurs;

    private sealed record OurSide(IPEndPoint? EndPoint, string Address, string Port);

    private static OurSide Ours(IPEndPoint? local)
    {
        var last = Volatile.Read(ref lastOurs);
        if (last is not null && Equals(last.EndPoint, local)) return last;
        last = new OurSide(local, FormatAddress(local?.Address), local is null ? Unavailable : local.Port.ToString(CultureInfo.InvariantCulture));
        Volatile.Write(ref lastOurs, last);
        return last;
    }

    // Ordinal, pair by pair (KeyValuePair's own Equals boxes and compares fields by reflection).
    private static bool Same(IReadOnlyList<KeyValuePair<string, string>> a, KeyValuePair<string, string>[] b)
    {
        if (a.Count != b.Length) return false;
        for (int i = 0; i < b.Length; i++)
        {
            if (!string.Equals(a[i].Key, b[i].Key, StringComparison.Ordinal) ||
                !string.Equals(a[i].Value, b[i].Value, StringComparison.Ordinal))
                return false;
        }
        return true;
    }

    // An address as XCLIENT and XFORWARD carry it.
    internal static string FormatAddress(IPAddress? address)
    {
        if (address is null) return Unavailable;
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetworkV6) return address.ToString();
        // Without the scope (%eth0), which Postfix cannot parse.
        return "IPV6:" + new IPAddress(address.GetAddressBytes());
    }
}
