using System.Net.Sockets;
using System.Text;
using Portcullis.EndToEnd.Harness;
using Xunit;

namespace Portcullis.EndToEnd.Reliability;

// How one message attempt ended for the client: the reply that settled it (the first one that was
// not the positive reply for its step, or the final reply), or none at all when the connection
// died or went silent first.
public sealed record Attempt(string Id, string Step, SmtpReply? Reply, string? Error)
{
    public bool Accepted => Reply is { Code: 250 } && Step == "end of data";

    public override string ToString() => $"{Id}: {Step} -> {(Reply?.ToString() ?? "no reply (" + Error + ")")}";
}

// Sends messages the way a client MTA does, one connection per message, and tells exactly what
// each got back. Each message carries its id in the Subject so the downstream's copy can be found.
public static class Traffic
{
    public static byte[] Message(string id, int size = 0)
    {
        if (size <= 0)
        {
            return TestMessages.Plain(id, "reliability test message " + id);
        }

        var text = TestMessages.LargeText(id, size);
        return text;
    }

    // Counts the downstream copies of message `id`.
    public static int CopiesOf(TestSmtpServer downstream, string id)
    {
        var needle = Encoding.ASCII.GetBytes($"\r\nSubject: {id}\r\n");
        return downstream.Messages.Snapshot().Count(m => m.Content.AsSpan().IndexOf(needle) >= 0);
    }

    public static async Task<Attempt> SendAsync(int port, string id, byte[] content, bool bdat = false, TimeSpan? replyTimeout = null)
    {
        RawSmtpClient? client = null;
        var step = "connect";
        try
        {
            client = await RawSmtpClient.ConnectAsync(port, replyTimeout ?? TimeSpan.FromSeconds(30));
            if (client.Banner.Code != 220)
            {
                return new Attempt(id, "banner", client.Banner, null);
            }

            foreach (var (command, positive, name) in new[]
                     {
                         ("EHLO client.test", 250, "EHLO"),
                         ($"MAIL FROM:<{TestMessages.Sender}>", 250, "MAIL"),
                         ($"RCPT TO:<{TestMessages.Recipient}>", 250, "RCPT"),
                     })
            {
                step = name;
                var reply = await client.ReadAfterAsync(command);
                if (reply is null || reply.Code != positive)
                {
                    return new Attempt(id, step, reply, reply is null ? "closed" : null);
                }
            }

            SmtpReply? final;
            if (bdat)
            {
                step = "end of data";
                await client.SendAsync(Encoding.ASCII.GetBytes($"BDAT {content.Length} LAST\r\n"));
                await client.SendAsync(content);
                final = await client.ReadReplyOrCloseAsync();
            }
            else
            {
                step = "DATA";
                var data = await client.ReadAfterAsync("DATA");
                if (data is null || data.Code != 354)
                {
                    return new Attempt(id, step, data, data is null ? "closed" : null);
                }

                step = "end of data";
                await client.SendAsync(SmtpBytes.DataPayload(content));
                final = await client.ReadReplyOrCloseAsync();
            }

            if (final is not null)
            {
                try
                {
                    await client.SendAsync("QUIT\r\n");
                    await client.ReadReplyOrCloseAsync();
                }
                catch (Exception e) when (e is IOException or SocketException or TimeoutException)
                {
                    // The answer that counts is in; the goodbye does not matter.
                }
            }

            return new Attempt(id, step, final, final is null ? "closed" : null);
        }
        catch (Exception e) when (e is IOException or SocketException or TimeoutException or InvalidDataException)
        {
            return new Attempt(id, step, null, e.GetType().Name + ": " + e.Message.Split('\n')[0]);
        }
        finally
        {
            if (client is not null)
            {
                await client.DisposeAsync();
            }
        }
    }

    private static async Task<SmtpReply?> ReadAfterAsync(this RawSmtpClient client, string command)
    {
        await client.SendAsync(command + "\r\n");
        return await client.ReadReplyOrCloseAsync();
    }

    // Runs `count` attempts, `parallel` at a time.
    public static async Task<List<Attempt>> RunAsync(int count, int parallel, Func<int, Task<Attempt>> attempt)
    {
        var results = new Attempt[count];
        var next = -1;
        async Task Worker()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                results[i] = await attempt(i);
            }
        }

        await Task.WhenAll(Enumerable.Range(0, Math.Min(parallel, count)).Select(_ => Worker()));
        return [.. results];
    }

    public static string Summary(IEnumerable<Attempt> attempts) =>
        string.Join(", ", attempts.GroupBy(a => a.Reply is null ? "no reply" : $"{a.Step} {a.Reply.Code}")
            .OrderBy(g => g.Key).Select(g => $"{g.Key} x{g.Count()}"));

    public static void AssertNoneAccepted(IEnumerable<Attempt> attempts, TestSmtpServer downstream)
    {
        var accepted = attempts.Where(a => a.Reply is { Class: 2 } && a.Step == "end of data").ToList();
        Assert.True(accepted.Count == 0, $"clients got 2xx for messages the downstream refused: {string.Join("; ", accepted)}\n{downstream}");
    }
}
