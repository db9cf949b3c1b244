using Xunit;

namespace Portcullis.EndToEnd.Harness;

// The usual raw-socket transaction steps, asserting the positive replies on the way.
public static class RawTransaction
{
    public static async Task BeginAsync(RawSmtpClient client, string mailParameters = "", params string[] recipients)
    {
        ExpectClass(2, await client.EhloAsync(), "EHLO", client);
        ExpectClass(2, await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>{mailParameters}"), "MAIL", client);
        foreach (var recipient in recipients.Length == 0 ? [TestMessages.Recipient] : recipients)
        {
            ExpectClass(2, await client.CommandAsync($"RCPT TO:<{recipient}>"), "RCPT", client);
        }
    }

    // EHLO, MAIL, RCPT, DATA, the stuffed content; returns the reply to the end of data.
    public static async Task<SmtpReply> SendAsync(RawSmtpClient client, byte[] content, string mailParameters = "")
    {
        await BeginAsync(client, mailParameters);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(SmtpBytes.DataPayload(content));
        return await client.ReadReplyAsync();
    }

    // BDAT chunks (RFC 3030); the last one carries LAST. Stops at the first reply that is not 2xx
    // and returns it, else the reply to the last chunk.
    public static async Task<SmtpReply> SendChunksAsync(RawSmtpClient client, params byte[][] chunks)
    {
        for (var i = 0; i < chunks.Length; i++)
        {
            var last = i == chunks.Length - 1;
            await client.SendAsync(SmtpBytes.Ascii($"BDAT {chunks[i].Length}{(last ? " LAST" : "")}\r\n"));
            await client.SendAsync(chunks[i]);
            var reply = await client.ReadReplyAsync();
            if (last || reply.Class != 2)
            {
                return reply;
            }
        }

        throw new ArgumentException("no chunks", nameof(chunks));
    }

    public static void ExpectClass(int expectedClass, SmtpReply reply, string step, RawSmtpClient client) =>
        Assert.True(reply.Class == expectedClass, $"{step}: expected {expectedClass}xx, got {reply}\n{client.Transcript}");

    // Splits `content` at the given offsets.
    public static byte[][] Split(byte[] content, params int[] offsets)
    {
        var bounds = offsets.Prepend(0).Append(content.Length).ToArray();
        return [.. bounds.Zip(bounds.Skip(1), (from, to) => content[from..to])];
    }
}
