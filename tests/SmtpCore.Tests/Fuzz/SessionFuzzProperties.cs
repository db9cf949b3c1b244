using System.Text;
using System.Text.RegularExpressions;
using FsCheck.Xunit;
using Portcullis.SmtpCore.Protocol;
using Portcullis.SmtpCore.Server;
using Portcullis.SmtpCore.Tests.Server;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Fuzz;

// A real SmtpSession on loopback fed hostile streams (SMTP fragments, NULs, invalid UTF-8,
// over-long lines, random bytes) in random chunkings. Whatever arrives: the session ends by
// itself once the client stops sending, never throws, writes only well-formed replies, stops
// talking after a 421, and accepts a message only with a 250 it can account for.
public partial class SessionFuzzProperties
{
    private static readonly SmtpServerOptions Options = new()
    {
        HostName = "fuzz.test",
        MaxLineLength = 512,
        MaxMessageSize = 4096,
        MaxRecipients = 5,
        MaxErrors = 8,
        CommandTimeout = TimeSpan.FromSeconds(5),
        DataTimeout = TimeSpan.FromSeconds(5),
    };

    [GeneratedRegex(@"^[2-5][0-9][0-9]([ -].*)?$")]
    private static partial Regex ReplyLine();

    [Property(MaxTest = 300, Arbitrary = [typeof(FuzzArbitraries)])]
    public async Task Hostile_streams_get_well_formed_replies_and_end_cleanly(Chunked input)
    {
        var handler = new RecordingHandler();
        await using var session = await LoopbackSession.StartAsync(Options, handler);
        try
        {
            foreach (var piece in input.Pieces())
                if (piece.Length > 0) await session.SendAsync(piece);
            session.ShutdownSend();
        }
        catch (IOException)
        {
            // The session may close first (421, line too long, QUIT): it stops reading, we stop sending.
        }

        string all = await session.ReadToEndAsync();
        await session.WaitForSessionEndAsync(); // RunAsync returned (no exception escapes it)
        Assert.True(session.Run.IsCompletedSuccessfully, $"the session ended with {session.Run.Exception}");

        Assert.True(all.Length == 0 || all.EndsWith("\r\n", StringComparison.Ordinal), $"output not CRLF-terminated: {Protocol.Escapes.Show(all)}");
        var lines = all.Length == 0 ? [] : all[..^2].Split("\r\n");
        Assert.All(lines, l => Assert.Matches(ReplyLine(), l));
        Assert.All(lines, l => Assert.DoesNotContain('\n', l));

        // Nothing follows a 421 or a 221: the session closed there.
        int closing = Array.FindIndex(lines, l => l.StartsWith("421 ", StringComparison.Ordinal) || l.StartsWith("221 ", StringComparison.Ordinal));
        Assert.True(closing < 0 || closing == lines.Length - 1, $"replies after the closing one:\n{string.Join("\n", lines)}");

        // Each accepted message has its own 250 "Queued", and its content has CRLF line ends only.
        int queued = lines.Count(l => l.StartsWith("250 2.0.0 Queued as M", StringComparison.Ordinal));
        Assert.Equal(handler.Messages.Count, queued);
        foreach (var message in handler.Messages)
        {
            Assert.True(message.Length <= Options.MaxMessageSize);
            var text = Encoding.Latin1.GetString(message);
            Assert.DoesNotMatch(new Regex("\r(?!\n)|(?<!\r)\n"), text);
        }
        Assert.True(handler.Events.Count(e => e == "close") == 1, "OnClose not called exactly once");
    }
}
