using System.Net;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.Appliance.Gateway;

// Who may send through the gateway: decided at connect and at each RCPT before the
// downstream sees the command. Relay rules (networks, tcprules, AUTH, POP-before-SMTP) plug in here.
internal interface IRelayPolicy
{
    // null: accept the connection; otherwise the reply to close it with (554 banner).
    SmtpReply? OnConnect(IPEndPoint? client);

    // null: pass the RCPT on to the downstream; otherwise the refusal (550 5.7.1).
    SmtpReply? OnRecipient(IPEndPoint? client, SmtpPath recipient);
}

// The core's policy: the downstream server's own RCPT checks decide, as with any
// before-queue content filter that sits in front of it.
internal sealed class DownstreamDecidesPolicy : IRelayPolicy
{
    public SmtpReply? OnConnect(IPEndPoint? client) => null;

    public SmtpReply? OnRecipient(IPEndPoint? client, SmtpPath recipient) => null;
}
