using System.Net;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.Appliance.Access;

// Who may send through the gateway: decided at connect and at each RCPT before the
// downstream sees the command. Access/RelayPolicy is the product's; tests may plug in others.
internal interface IRelayPolicy
{
    // null: accept the connection; otherwise the reply to close it with (554 banner).
    // access carries what the connection earned (trusted network, a rules-file match) to RCPT time.
    SmtpReply? OnConnect(IPAddress? client, out ClientAccess access);

    // null: pass the RCPT on to the downstream; otherwise the refusal (550 5.7.1).
    // reason says which right let it through (trusted, relayclient, auth, pop-before-smtp, local).
    SmtpReply? OnRecipient(ClientAccess access, string? authenticatedUser, SmtpPath recipient, out string reason);
}

// What one connection brought with it from the door.
internal sealed record ClientAccess(IPAddress? Address, bool Trusted, TcpRule? Rule)
{
    // Before the connection was judged: nothing known, nothing granted (one shared instance).
    public static readonly ClientAccess Unknown = new(null, false, null);
}
