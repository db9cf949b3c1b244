using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Gateway;

// What the client hears when the downstream answers or fails. Only the downstream's 2xx, 4xx
// and 5xx have a meaning for the client (Postfix smtpd_proxy does the same).
internal static class DownstreamReplies
{
    public static readonly SmtpReply Unavailable =
        new(451, "4.4.1", "Mail server behind this gateway is unavailable, try again later");

    public static SmtpReply MapFinal(SmtpReply reply) =>
        reply.Code is >= 200 and < 300 or >= 400 ? reply : Unexpected(reply);

    private static SmtpReply Unexpected(SmtpReply reply) =>
        new(451, "4.3.0", $"Unexpected reply from the mail server behind this gateway ({reply.Code})");
}
