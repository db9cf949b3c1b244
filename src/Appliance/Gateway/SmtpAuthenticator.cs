// SMTP AUTH for the gateway's clients (RFC 4954): PLAIN and LOGIN, offered as [auth] says,
// checked against the local passwd file ([auth] passwd_file) or, without one, by the downstream
// itself over the session's own connection. Failures are counted per client address; too many
// close the session.
using System.Text;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal sealed class SmtpAuthenticator(GatewayContext ctx, DownstreamLease lease)
{
    public SaslOffer Offer =>
        ctx.Config.Auth.Enabled ? new SaslOffer(["PLAIN", "LOGIN"], !ctx.Config.Auth.AllowPlaintext) : SaslOffer.None;

    public SmtpReply? Start(SmtpSession session) =>
        ctx.AuthThrottle.IsBlocked(GatewaySession.ClientAddress(session))
            ? new SmtpReply(454, "4.7.0", "Too many failed authentication attempts, try again later")
            : null;

    public async ValueTask<SmtpReply> AuthenticateAsync(SmtpSession session, SaslCredentials credentials, CancellationToken ct)
    {
        var client = GatewaySession.ClientAddress(session);
        bool? ok;
        if (ctx.Passwords is { } passwords)
        {
            var file = passwords.Current;
            // Hashing is deliberately slow (yescrypt, bcrypt): keep it off the I/O threads.
            ok = await Task.Run(() => file.Verify(credentials.UserName, credentials.Password), ct).ConfigureAwait(false);
        }
        else
        {
            ok = await DownstreamAuthenticateAsync(session, credentials, ct).ConfigureAwait(false);
            if (ok is null) return new SmtpReply(454, "4.7.0", "Temporary authentication failure, try again later");
        }
        if (ok == true)
        {
            Log.Info($"session={session.Id} client={client} authenticated user={LogValue(credentials.UserName)} mechanism={credentials.Mechanism}");
            return new SmtpReply(235, "2.7.0", "Authentication successful");
        }
        int failures = ctx.AuthThrottle.RecordFailure(client);
        ctx.Metrics.AuthFailed();
        Log.Warn($"session={session.Id} client={client} authentication failed user={LogValue(credentials.UserName)} mechanism={credentials.Mechanism} failures={failures}");
        if (ctx.Config.Auth.FailureDelay > TimeSpan.Zero)
            await Task.Delay(ctx.Config.Auth.FailureDelay, ct).ConfigureAwait(false);
        return failures >= ctx.Config.Auth.MaxFailures
            ? new SmtpReply(421, "4.7.0", $"{ctx.Config.General.Hostname} Too many failed authentication attempts, closing connection")
            : new SmtpReply(535, "5.7.8", "Authentication credentials invalid");
    }

    // [auth] downstream = yes: the credentials go to the downstream over this session's own
    // connection (AUTH PLAIN, or LOGIN when that is all it offers); its 235 or 535 decides.
    // null: no verdict (downstream unavailable, no AUTH offered, a 4xx).
    private async Task<bool?> DownstreamAuthenticateAsync(SmtpSession session, SaslCredentials credentials, CancellationToken ct)
    {
        DownstreamClient downstream;
        try
        {
            downstream = await lease.AcquireAsync(ct).ConfigureAwait(false);
            var mechanisms = downstream.Capabilities.AuthMechanisms;
            SmtpReply reply;
            if (mechanisms.Contains("PLAIN"))
            {
                var plain = Convert.ToBase64String(Encoding.UTF8.GetBytes($"{credentials.AuthorizationId}\0{credentials.UserName}\0{credentials.Password}"));
                reply = await downstream.SendCommandAsync("AUTH PLAIN " + plain, ct).ConfigureAwait(false);
            }
            else if (mechanisms.Contains("LOGIN"))
            {
                reply = await downstream.SendCommandAsync("AUTH LOGIN", ct).ConfigureAwait(false);
                if (reply.Code == 334) reply = await SendSaslLineAsync(downstream, credentials.UserName, ct).ConfigureAwait(false);
                if (reply.Code == 334) reply = await SendSaslLineAsync(downstream, credentials.Password, ct).ConfigureAwait(false);
            }
            else
            {
                Log.Warn($"session={session.Id} [auth] downstream = yes but the downstream offers neither AUTH PLAIN nor LOGIN");
                return null;
            }
            if (reply.Code == 235) return true;
            if (reply.IsPermanent) return false;
            Log.Warn($"session={session.Id} downstream AUTH answered {reply}");
            if (reply.Code == 334) await lease.DropAsync().ConfigureAwait(false); // out of step: start afresh
            return null;
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={session.Id} downstream unavailable for AUTH: {e.Message}");
            await lease.DropAsync().ConfigureAwait(false);
            return null;
        }
    }

    // A user name is the client's own text: quoted and escaped like a message log value, so that a
    // CR or LF in it cannot start a line of its own in the journal.
    private static string LogValue(string value)
    {
        var text = new StringBuilder();
        MessageLog.AppendValue(text, value);
        return text.ToString();
    }

    // A SASL response line is not a command the client knows to flush: push it out explicitly.
    private static async Task<SmtpReply> SendSaslLineAsync(DownstreamClient downstream, string text, CancellationToken ct)
    {
        var reply = downstream.SendSaslResponseAsync(Convert.ToBase64String(Encoding.UTF8.GetBytes(text)), ct);
        await downstream.FlushAsync(ct).ConfigureAwait(false);
        return await reply.ConfigureAwait(false);
    }
}
