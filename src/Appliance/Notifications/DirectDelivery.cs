using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Notifications;

// One message sent on its own connection to a mail server, outside any client session: a
// notification from the outbox, a message released from quarantine. The message goes to the
// recipients the server accepts; the result says who was refused and why.
internal static class DirectDelivery
{
    public sealed record Result(bool Delivered, bool Transient, string Reply, IReadOnlyList<(string Recipient, string Reply)> Refused);

    // DownstreamException when the server cannot be reached or the connection fails.
    public static async Task<Result> SendAsync(DownstreamOptions options, string from, IReadOnlyList<string> recipients,
        ReadOnlyMemory<byte> headerPrefix, IMessageContent body, CancellationToken ct)
    {
        await using var client = await DownstreamClient.ConnectAsync(options, ct).ConfigureAwait(false);
        var parameters = client.Capabilities.EightBitMime ? "BODY=8BITMIME" : null;
        var mail = client.MailAsync("<" + from + ">", parameters, ct);
        var rcpts = recipients.Select(r => client.RcptAsync("<" + r + ">", null, ct)).ToArray();
        await client.FlushAsync(ct).ConfigureAwait(false);
        var mailReply = await mail.ConfigureAwait(false);
        var refused = new List<(string, string)>();
        var accepted = 0;
        for (var i = 0; i < rcpts.Length; i++)
        {
            var reply = await rcpts[i].ConfigureAwait(false);
            if (reply.IsPositiveCompletion) accepted++;
            else refused.Add((recipients[i], reply.ToString()));
        }

        if (!mailReply.IsPositiveCompletion)
        {
            return new Result(false, mailReply.IsTransient, mailReply.ToString(), refused);
        }

        if (accepted == 0)
        {
            await client.RsetAsync(ct).ConfigureAwait(false);
            var transient = refused.Count > 0 && refused.All(r => r.Item2.StartsWith('4'));
            return new Result(false, transient, refused.Count > 0 ? refused[0].Item2 : "no recipients", refused);
        }

        var final = await client.SendMessageAsync(headerPrefix, body, ct).ConfigureAwait(false);
        return new Result(final.IsPositiveCompletion, final.IsTransient, final.ToString(), refused);
    }
}
