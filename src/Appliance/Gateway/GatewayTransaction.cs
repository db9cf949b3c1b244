using System.Diagnostics;
using Portcullis.Appliance.Messages;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

// What the gateway keeps about one SMTP transaction (SmtpTransaction.HandlerState): when it
// began, the message buffer while it is being received and scanned, whether MAIL went to the
// downstream (so an abort must RSET it), and whether a verdict was reached.
internal sealed class GatewayTransaction
{
    public long Started = Stopwatch.GetTimestamp();
    public MessageBuffer? Buffer;
    public bool MailSent;
    public bool Finished;

    public static GatewayTransaction Of(SmtpTransaction tx) =>
        tx.HandlerState as GatewayTransaction ?? throw new InvalidOperationException("transaction without gateway state");
}
