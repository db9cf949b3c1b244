using System.Buffers;
using System.Text;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Protocol;

public class SmtpCommandParserTests
{
    private const int Cap = 2048;

    // Parses the input whole and in one-byte segments (same answer both ways), and checks that every
    // strict prefix is Incomplete, or the same error the whole input gives, never a command.
    private static (ParseStatus Status, SmtpCommand Command, long Consumed) Parse(byte[] input, int maxLength = Cap)
    {
        (ParseStatus, SmtpCommand, long)? first = null;
        foreach (var (shape, sequence) in Sequences.Shapes(input))
        {
            var reader = new SequenceReader<byte>(sequence);
            var status = SmtpCommandParser.TryParse(ref reader, maxLength, out var command);
            var result = (status, command, reader.Consumed);
            if (first is null) first = result;
            else if (!first.Value.Equals(result)) Assert.Fail($"{shape}: {status} differs from the contiguous parse");
        }
        var whole = first!.Value;

        for (int length = 0; length < input.Length; length++)
        {
            foreach (var (shape, sequence) in Sequences.Shapes(input[..length]))
            {
                var reader = new SequenceReader<byte>(sequence);
                var status = SmtpCommandParser.TryParse(ref reader, maxLength, out _);
                if (status == ParseStatus.Incomplete)
                {
                    Assert.Equal(0, reader.Consumed); // a partial line stays in the buffer
                    continue;
                }
                if (whole.Item1 == ParseStatus.Complete || status != whole.Item1)
                    Assert.Fail($"prefix of {length} bytes ({shape}) gave {status}; whole input gives {whole.Item1}");
            }
        }
        return whole;
    }

    private static (ParseStatus Status, SmtpCommand Command, long Consumed) Parse(string input, int maxLength = Cap) =>
        Parse(Encoding.UTF8.GetBytes(input), maxLength);

    public static TheoryData<string, SmtpVerb, string, string> Commands => new()
    {
        { "HELO client.example\r\n", SmtpVerb.Helo, "HELO", "client.example" },
        { "EHLO client.example\r\n", SmtpVerb.Ehlo, "EHLO", "client.example" },
        { "MAIL FROM:<a@b.example>\r\n", SmtpVerb.Mail, "MAIL", "FROM:<a@b.example>" },
        { "RCPT TO:<c@d.example> NOTIFY=NEVER\r\n", SmtpVerb.Rcpt, "RCPT", "TO:<c@d.example> NOTIFY=NEVER" },
        { "DATA\r\n", SmtpVerb.Data, "DATA", "" },
        { "BDAT 100 LAST\r\n", SmtpVerb.Bdat, "BDAT", "100 LAST" },
        { "RSET\r\n", SmtpVerb.Rset, "RSET", "" },
        { "NOOP\r\n", SmtpVerb.Noop, "NOOP", "" },
        { "NOOP anything at all\r\n", SmtpVerb.Noop, "NOOP", "anything at all" },
        { "QUIT\r\n", SmtpVerb.Quit, "QUIT", "" },
        { "VRFY postmaster\r\n", SmtpVerb.Vrfy, "VRFY", "postmaster" },
        { "EXPN list\r\n", SmtpVerb.Expn, "EXPN", "list" },
        { "HELP\r\n", SmtpVerb.Help, "HELP", "" },
        { "HELP MAIL\r\n", SmtpVerb.Help, "HELP", "MAIL" },
        { "STARTTLS\r\n", SmtpVerb.StartTls, "STARTTLS", "" },
        { "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", SmtpVerb.Auth, "AUTH", "PLAIN AGJvYgBzZWNyZXQ=" },
        // Verbs are case-insensitive (RFC 5321 §2.4); the verb text is shown upper case.
        { "helo client.example\r\n", SmtpVerb.Helo, "HELO", "client.example" },
        { "eHlO client.example\r\n", SmtpVerb.Ehlo, "EHLO", "client.example" },
        { "mail from:<a@b.example>\r\n", SmtpVerb.Mail, "MAIL", "from:<a@b.example>" },
        { "rcpt to:<x@y>\r\n", SmtpVerb.Rcpt, "RCPT", "to:<x@y>" },
        { "data\r\n", SmtpVerb.Data, "DATA", "" },
        { "bDaT 0 last\r\n", SmtpVerb.Bdat, "BDAT", "0 last" },
        { "rset\r\n", SmtpVerb.Rset, "RSET", "" },
        { "Noop\r\n", SmtpVerb.Noop, "NOOP", "" },
        { "quit\r\n", SmtpVerb.Quit, "QUIT", "" },
        { "vrfy x\r\n", SmtpVerb.Vrfy, "VRFY", "x" },
        { "expn x\r\n", SmtpVerb.Expn, "EXPN", "x" },
        { "help\r\n", SmtpVerb.Help, "HELP", "" },
        { "StartTls\r\n", SmtpVerb.StartTls, "STARTTLS", "" },
        { "auth login\r\n", SmtpVerb.Auth, "AUTH", "login" },
        // Trailing spaces are not part of the argument; the argument keeps its inner spaces.
        { "MAIL FROM:<a@b> SIZE=10   \r\n", SmtpVerb.Mail, "MAIL", "FROM:<a@b> SIZE=10" },
        { "DATA \r\n", SmtpVerb.Data, "DATA", "" },
        // The "MAIL FROM: <a@b>" space is left for the path parser.
        { "MAIL FROM: <a@b>\r\n", SmtpVerb.Mail, "MAIL", "FROM: <a@b>" },
        // RFC 6531: UTF-8 arguments are decoded.
        { "RCPT TO:<jösé@exämple.org>\r\n", SmtpVerb.Rcpt, "RCPT", "TO:<jösé@exämple.org>" },
        // Unknown verbs are recognised as such, shown with non-printables escaped.
        { "XYZZY plugh\r\n", SmtpVerb.Unknown, "XYZZY", "plugh" },
        { "MAILX FROM:<a@b>\r\n", SmtpVerb.Unknown, "MAILX", "FROM:<a@b>" },
        { "MAI\r\n", SmtpVerb.Unknown, "MAI", "" },
        { "\r\n", SmtpVerb.Unknown, "", "" },
        { "NO\tOP\r\n", SmtpVerb.Unknown, "NO?OP", "" },
        // A CR inside the line is not a line end.
        { "NOOP\r\r\n", SmtpVerb.Unknown, "NOOP?", "" },
    };

    [Theory, MemberData(nameof(Commands))]
    public void Parses_each_command_in_any_chunking(string line, SmtpVerb verb, string verbText, string argument)
    {
        var (status, command, consumed) = Parse(line);
        Assert.Equal(ParseStatus.Complete, status);
        Assert.Equal(verb, command.Verb);
        Assert.Equal(verbText, command.VerbText);
        Assert.Equal(argument, command.Argument);
        Assert.Equal(Encoding.UTF8.GetByteCount(line), consumed);
    }

    [Fact]
    public void Unknown_verb_text_is_cut_to_32_printable_characters()
    {
        var (status, command, _) = Parse(new string('Z', 40) + "\x01 x\r\n");
        Assert.Equal(ParseStatus.Complete, status);
        Assert.Equal(SmtpVerb.Unknown, command.Verb);
        Assert.Equal(new string('Z', 32), command.VerbText);
    }

    [Fact]
    public void Parses_only_the_first_of_pipelined_commands_and_leaves_the_rest()
    {
        byte[] input = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhalf a li"u8.ToArray();
        var expected = new[] { (SmtpVerb.Mail, "FROM:<a@b>"), (SmtpVerb.Rcpt, "TO:<c@d>"), (SmtpVerb.Data, "") };
        foreach (var (shape, sequence) in Sequences.Shapes(input))
        {
            var reader = new SequenceReader<byte>(sequence);
            foreach (var (verb, argument) in expected)
            {
                Assert.Equal(ParseStatus.Complete, SmtpCommandParser.TryParse(ref reader, Cap, out var command));
                Assert.Equal((verb, argument), (command.Verb, command.Argument));
            }
            long before = reader.Consumed;
            Assert.Equal(ParseStatus.Incomplete, SmtpCommandParser.TryParse(ref reader, Cap, out _));
            Assert.Equal(before, reader.Consumed);
            Assert.Equal("half a li"u8.ToArray(), reader.UnreadSequence.ToArray());
            _ = shape;
        }
    }

    [Fact]
    public void Empty_input_is_incomplete()
    {
        var reader = new SequenceReader<byte>(ReadOnlySequence<byte>.Empty);
        Assert.Equal(ParseStatus.Incomplete, SmtpCommandParser.TryParse(ref reader, Cap, out _));
    }

    [Theory]
    [InlineData("NOOP\n")]
    [InlineData("\n")]
    [InlineData("MAIL FROM:<a@b>\n")]
    [InlineData("NOOP\rX\n")]
    public void A_line_ending_in_a_bare_LF_is_consumed_and_reported(string line)
    {
        var (status, _, consumed) = Parse(line);
        Assert.Equal(ParseStatus.BareLineFeed, status);
        Assert.Equal(line.Length, consumed);
    }

    [Fact]
    public void Bare_LF_line_does_not_swallow_the_next_command()
    {
        foreach (var (_, sequence) in Sequences.Shapes("NOOP\nQUIT\r\n"u8.ToArray()))
        {
            var reader = new SequenceReader<byte>(sequence);
            Assert.Equal(ParseStatus.BareLineFeed, SmtpCommandParser.TryParse(ref reader, Cap, out _));
            Assert.Equal(ParseStatus.Complete, SmtpCommandParser.TryParse(ref reader, Cap, out var command));
            Assert.Equal(SmtpVerb.Quit, command.Verb);
        }
    }

    // The cap counts the whole line including CRLF.
    [Theory]
    [InlineData(16)]
    [InlineData(512)]
    [InlineData(300)] // past the parser's 256-byte stack copy
    public void A_line_exactly_at_the_cap_is_parsed(int cap)
    {
        string line = "NOOP " + new string('x', cap - 7) + "\r\n";
        Assert.Equal(cap, line.Length);
        var (status, command, consumed) = Parse(line, cap);
        Assert.Equal(ParseStatus.Complete, status);
        Assert.Equal(SmtpVerb.Noop, command.Verb);
        Assert.Equal(new string('x', cap - 7), command.Argument);
        Assert.Equal(cap, consumed);
    }

    [Theory]
    [InlineData(16)]
    [InlineData(512)]
    [InlineData(300)]
    public void A_line_one_byte_over_the_cap_is_too_long(int cap)
    {
        string line = "NOOP " + new string('x', cap - 6) + "\r\n";
        Assert.Equal(ParseStatus.LineTooLong, Parse(line, cap).Status);
    }

    [Fact]
    public void No_LF_within_the_cap_is_too_long_without_waiting_for_more()
    {
        const int cap = 32;
        Assert.Equal(ParseStatus.Incomplete, Parse(new string('x', cap - 1), cap).Status);
        Assert.Equal(ParseStatus.LineTooLong, Parse(new string('x', cap), cap).Status);
        // The cap, not the buffer: a huge line with its LF far away is refused too.
        Assert.Equal(ParseStatus.LineTooLong, Parse(new string('x', 10 * cap) + "\r\n", cap).Status);
        // A bare LF past the cap is still a too-long line.
        Assert.Equal(ParseStatus.LineTooLong, Parse(new string('x', cap + 1) + "\n", cap).Status);
    }

    [Fact]
    public void The_cap_applies_to_the_line_not_to_earlier_commands_in_the_buffer()
    {
        const int cap = 16;
        byte[] input = Encoding.ASCII.GetBytes("NOOP 123456789\r\nNOOP 123456789\r\n");
        foreach (var (_, sequence) in Sequences.Shapes(input))
        {
            var reader = new SequenceReader<byte>(sequence);
            Assert.Equal(ParseStatus.Complete, SmtpCommandParser.TryParse(ref reader, cap, out _));
            Assert.Equal(ParseStatus.Complete, SmtpCommandParser.TryParse(ref reader, cap, out _));
            Assert.True(reader.End);
        }
    }
}
