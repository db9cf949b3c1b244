using System.Buffers;
using System.Text;
using FsCheck.Xunit;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Fuzz;

// The command parser under random byte streams cut at random places, read the way SmtpSession
// reads them: parse every complete line in what has arrived, keep the rest, read more.
public class CommandParserFuzzProperties
{
    private const int Cap = 512; // small, so over-long lines are common in the generated streams

    private sealed record Step(ParseStatus Status, SmtpCommand Command, byte[] Line)
    {
        // default(SmtpCommand) has null strings: show the fields, not Command.ToString().
        public override string ToString() => $"{Status} {Command.Verb} '{Command.VerbText}' '{Command.Argument}' {Protocol.Escapes.Show(Line)}";
    }

    // Feeds the pieces one after another into a growing buffer, like the session's pipe; stops at
    // LineTooLong (the session answers 500 and closes). Returns every non-Incomplete answer with
    // the bytes it consumed.
    private static List<Step> Session(IEnumerable<byte[]> pieces)
    {
        var steps = new List<Step>();
        var buffer = new List<byte>();
        foreach (var piece in pieces)
        {
            buffer.AddRange(piece);
            while (true)
            {
                var bytes = buffer.ToArray();
                // The unread part as a multi-segment sequence too: same answer required.
                var contiguous = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
                var status = SmtpCommandParser.TryParse(ref contiguous, Cap, out var command);
                var split = new SequenceReader<byte>(Protocol.Sequences.OneBytePerSegment(bytes));
                var splitStatus = SmtpCommandParser.TryParse(ref split, Cap, out var splitCommand);
                Assert.Equal((status, command, contiguous.Consumed), (splitStatus, splitCommand, split.Consumed));

                if (status == ParseStatus.Incomplete)
                {
                    Assert.Equal(0, contiguous.Consumed); // a partial line stays for the next read
                    break;
                }
                int consumed = (int)contiguous.Consumed;
                steps.Add(new Step(status, command, bytes[..consumed]));
                buffer.RemoveRange(0, consumed);
                if (status == ParseStatus.LineTooLong) return steps;
            }
        }
        return steps;
    }

    [Property(MaxTest = 1500, Arbitrary = [typeof(FuzzArbitraries)])]
    public void Any_chunking_gives_the_same_commands_as_the_whole_stream(Chunked input)
    {
        var whole = Session([input.Input]);
        var chunked = Session(input.Pieces());
        // After LineTooLong the session closes; how much of the long line had arrived by then varies.
        static string Show(Step s) => s.Status == ParseStatus.LineTooLong ? "LineTooLong" : s.ToString();
        Assert.Equal(whole.Select(Show), chunked.Select(Show));
    }

    [Property(MaxTest = 1500, Arbitrary = [typeof(FuzzArbitraries)])]
    public void A_command_is_only_ever_a_whole_CRLF_line_within_the_cap(Chunked input)
    {
        foreach (var step in Session(input.Pieces()))
        {
            var line = step.Line;
            switch (step.Status)
            {
                case ParseStatus.Complete:
                    Assert.True(line.Length <= Cap, $"a {line.Length}-byte line parsed as a command: {step}");
                    Assert.True(line.AsSpan().EndsWith("\r\n"u8), $"a command without CRLF: {step}");
                    Assert.Equal(line.Length - 1, Array.IndexOf(line, (byte)'\n')); // one line, never two
                    var verb = line.AsSpan(0, line.Length - 2);
                    int space = verb.IndexOf((byte)' ');
                    if (space >= 0) verb = verb[..space];
                    if (step.Command.Verb != SmtpVerb.Unknown)
                        Assert.True(Ascii.EqualsIgnoreCase(verb, Encoding.ASCII.GetBytes(step.Command.VerbText)), $"verb mismatch: {step}");
                    // What the session may log of an unknown verb is printable ASCII, whatever arrived.
                    Assert.All(step.Command.VerbText, c => Assert.InRange(c, '!', '~'));
                    break;
                case ParseStatus.BareLineFeed:
                    Assert.True(line.Length <= Cap && line[^1] == '\n' && (line.Length == 1 || line[^2] != '\r'), $"not a bare-LF line: {step}");
                    Assert.Equal(line.Length - 1, Array.IndexOf(line, (byte)'\n'));
                    break;
                case ParseStatus.LineTooLong:
                    // Either the cap filled up without LF, or the LF came too late.
                    int lf = Array.IndexOf(line, (byte)'\n');
                    Assert.True(lf < 0 ? line.Length >= Cap : lf + 1 > Cap, $"LineTooLong for a short line: {step}");
                    break;
            }
        }
    }

    [Property(MaxTest = 1000, Arbitrary = [typeof(FuzzArbitraries)])]
    public void A_stream_without_LF_never_yields_a_command(Chunked input)
    {
        var noLf = input.Input.Select(b => b == '\n' ? (byte)'\r' : b).ToArray();
        var steps = Session(new Chunked(noLf, input.Cuts).Pieces());
        Assert.All(steps, s => Assert.Equal(ParseStatus.LineTooLong, s.Status));
        Assert.True(steps.Count == (noLf.Length >= Cap ? 1 : 0), string.Join("; ", steps));
    }
}
