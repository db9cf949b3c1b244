using System.Buffers;
using System.Text;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Protocol;

internal sealed record DataOutcome(string Output, bool Complete, int Consumed, DataError Error, long Size)
{
    public override string ToString() =>
        $"output={Escapes.Show(Output)} complete={Complete} consumed={Consumed} error={Error} size={Size}";
}

internal static class Escapes
{
    public static string Show(string bytes) => Show(Encoding.Latin1.GetBytes(bytes));

    public static string Show(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder("\"");
        foreach (byte b in bytes)
            sb.Append(b switch { (byte)'\r' => "\\r", (byte)'\n' => "\\n", >= 0x20 and < 0x7f => ((char)b).ToString(), _ => $"\\x{b:x2}" });
        return sb.Append('"').ToString();
    }
}

internal static class DataFeed
{
    // Feeds the chunks in order as the session does: stop once complete, the rest is the next command.
    public static DataOutcome Run(byte[] input, IEnumerable<int> cuts, long maxSize = long.MaxValue,
        BareNewlinePolicy policy = BareNewlinePolicy.Normalize, bool dot = true, IBufferWriter<byte>? sink = null)
    {
        var output = new ArrayBufferWriter<byte>();
        var reader = new DataReader(sink ?? output, maxSize, policy, dot);
        int consumed = 0, from = 0;
        foreach (int cut in cuts.Append(input.Length))
        {
            if (cut < from) continue;
            var chunk = input.AsSpan(from, cut - from);
            from = cut;
            int used = reader.Process(chunk);
            consumed += used;
            if (reader.IsComplete) break;
            Assert.Equal(chunk.Length, used); // an incomplete reader takes everything it is given
        }
        if (!dot) reader.Finish();
        // Past the cap the content is thrown away; how much got written before depends on the chunking.
        string written = reader.Error == DataError.TooLarge ? "(discarded)" : Encoding.Latin1.GetString(output.WrittenSpan);
        return new DataOutcome(written, reader.IsComplete, consumed, reader.Error, reader.Size);
    }

    // Whole, one byte at a time, and every split in two: all must agree.
    public static DataOutcome RunEveryWay(string text, long maxSize = long.MaxValue,
        BareNewlinePolicy policy = BareNewlinePolicy.Normalize, bool dot = true)
    {
        byte[] input = Encoding.Latin1.GetBytes(text);
        var whole = Run(input, [], maxSize, policy, dot);
        var bytewise = Run(input, Enumerable.Range(1, Math.Max(0, input.Length - 1)), maxSize, policy, dot);
        Assert.Equal(whole, bytewise);
        for (int cut = 1; cut < input.Length; cut++)
            Assert.Equal(whole, Run(input, [cut], maxSize, policy, dot));
        return whole;
    }
}

public class DataReaderTests
{
    private const string Mail = "MAIL FROM:<x@y>\r\n";

    [Theory]
    [InlineData("hello\r\n.\r\n", "hello\r\n")]
    [InlineData(".\r\n", "")]                                     // the DATA line's CRLF starts the terminator
    [InlineData("\r\n.\r\n", "\r\n")]
    [InlineData("..\r\n.\r\n", ".\r\n")]                          // RFC 5321 §4.5.2
    [InlineData("..hidden\r\n.\r\n", ".hidden\r\n")]
    [InlineData("a\r\n..\r\n.\r\n", "a\r\n.\r\n")]
    [InlineData("a\r\n...\r\n.\r\n", "a\r\n..\r\n")]
    [InlineData("a\r\n.b\r\n.\r\n", "a\r\nb\r\n")]              // a lone leading dot is stuffing too
    [InlineData("a.\r\n.\r\n", "a.\r\n")]                        // only a line's first dot
    [InlineData("a\r\n .\r\n.\r\n", "a\r\n .\r\n")]
    [InlineData("\x80\xff\x00\r\n.\r\n", "\x80\xff\x00\r\n")]     // 8-bit and NUL are content
    public void Unstuffs_and_ends_at_the_terminator(string input, string expected)
    {
        var outcome = DataFeed.RunEveryWay(input);
        Assert.Equal(new DataOutcome(expected, true, input.Length, DataError.None, expected.Length), outcome);
    }

    [Theory]
    [InlineData("a\r\n.\r\n" + Mail, "a\r\n.\r\n")]
    [InlineData(".\r\n.\r\n", ".\r\n")]
    [InlineData(".\r\nQUIT\r\n", ".\r\n")]
    public void Leaves_the_bytes_after_the_terminator(string input, string message)
    {
        var outcome = DataFeed.RunEveryWay(input);
        Assert.True(outcome.Complete);
        Assert.Equal(message.Length, outcome.Consumed);
    }

    [Fact]
    public void Does_nothing_once_complete()
    {
        var reader = new DataReader(new ArrayBufferWriter<byte>(), long.MaxValue, BareNewlinePolicy.Normalize, true);
        Assert.Equal(3, reader.Process(".\r\n"u8));
        Assert.Equal(0, reader.Process("more\r\n.\r\n"u8));
        Assert.True(reader.IsComplete);
    }

    [Theory]
    [InlineData("")]
    [InlineData("a")]
    [InlineData(".")]
    [InlineData(".\r")]
    [InlineData("a\r\n")]
    [InlineData("a\r\n.")]
    [InlineData("a\r\n.\r")]
    public void Waits_for_more_on_a_partial_terminator(string input)
    {
        var outcome = DataFeed.RunEveryWay(input);
        Assert.False(outcome.Complete);
        Assert.Equal(input.Length, outcome.Consumed);
    }

    // SMTP smuggling (CVE-2023-51764 and friends): none of these is an end of data. With Normalize
    // the text after them is content with CRLF line endings; with Reject the message is refused
    // once the real CRLF.CRLF arrives.
    public static TheoryData<string, string> Smuggling => new()
    {
        { "a\n.\n", "a\r\n.\r\n" },
        { "a\r\n.\n", "a\r\n\r\n" },
        { "a\n.\r\n", "a\r\n.\r\n" },
        { "a\r.\r\n", "a\r\n.\r\n" },
        { "a\r\n.\r", "a\r\n\r\n" },
        { "a\r.\r", "a\r\n.\r\n" },
        { "\n.\r\n", "\r\n.\r\n" },
        { "\n.\n", "\r\n.\r\n" },
        { "a\n", "a\r\n" },
        { "a\r", "a\r\n" },
        { "a\r\r\n", "a\r\n\r\n" },
        { "a\n\n", "a\r\n\r\n" },
    };

    [Theory, MemberData(nameof(Smuggling))]
    public void Bare_newlines_never_end_data_and_are_normalized(string trick, string expectedPrefix)
    {
        string input = trick + Mail + "\r\n.\r\n";
        var outcome = DataFeed.RunEveryWay(input);
        Assert.True(outcome.Complete);
        Assert.Equal(input.Length, outcome.Consumed);
        Assert.Equal(DataError.None, outcome.Error);
        Assert.Equal(expectedPrefix + Mail + "\r\n", outcome.Output);
        AssertOnlyCrlf(outcome.Output);

        // Without the real terminator the reader is still waiting.
        var open = DataFeed.RunEveryWay(trick + Mail);
        Assert.False(open.Complete);
    }

    [Theory, MemberData(nameof(Smuggling))]
    public void Bare_newlines_are_refused_after_draining_to_the_real_end(string trick, string _)
    {
        string input = trick + Mail + "\r\n.\r\n" + Mail;
        var outcome = DataFeed.RunEveryWay(input, policy: BareNewlinePolicy.Reject);
        Assert.True(outcome.Complete);
        Assert.Equal(DataError.BareNewline, outcome.Error);
        Assert.Equal(input.Length - Mail.Length, outcome.Consumed);
        Assert.False(DataFeed.RunEveryWay(trick + Mail, policy: BareNewlinePolicy.Reject).Complete);
    }

    [Fact]
    public void Dot_CR_followed_by_other_bytes_drops_the_dot_and_treats_the_CR_as_bare()
    {
        Assert.Equal("\r\nx\r\n", DataFeed.RunEveryWay(".\rx\r\n.\r\n").Output);
        Assert.Equal("\r\n\r\n", DataFeed.RunEveryWay(".\r\r\n.\r\n").Output);
        Assert.Equal(DataError.BareNewline, DataFeed.RunEveryWay(".\rx\r\n.\r\n", policy: BareNewlinePolicy.Reject).Error);
    }

    [Theory]
    [InlineData("123\r\n.\r\n", 5, DataError.None)]    // exactly the cap: CRLF counts
    [InlineData("1234\r\n.\r\n", 5, DataError.TooLarge)]
    [InlineData("..\r\n.\r\n", 3, DataError.None)]     // the cap counts unstuffed bytes
    [InlineData(".\r\n", 0, DataError.None)]
    [InlineData("\r\n.\r\n", 0, DataError.TooLarge)]
    [InlineData("a\n\r\n.\r\n", 2, DataError.TooLarge)]    // a normalised LF is two bytes
    public void Size_cap(string input, long max, DataError expected)
    {
        var outcome = DataFeed.RunEveryWay(input, max);
        Assert.True(outcome.Complete);
        Assert.Equal(input.Length, outcome.Consumed);
        Assert.Equal(expected, outcome.Error);
    }

    [Fact]
    public void Size_cap_latches_drops_the_rest_and_drains_to_the_end()
    {
        string input = "0123456789\r\n" + string.Concat(Enumerable.Repeat("more content\r\n", 100)) + ".\r\n" + Mail;
        var outcome = DataFeed.RunEveryWay(input, 11, BareNewlinePolicy.Reject);
        Assert.Equal(DataError.TooLarge, outcome.Error);
        Assert.True(outcome.Complete);
        Assert.Equal(input.Length - Mail.Length, outcome.Consumed);
        Assert.Equal(12 + 14 * 100, outcome.Size);
    }

    [Fact]
    public void The_first_error_is_the_one_reported()
    {
        Assert.Equal(DataError.BareNewline, DataFeed.RunEveryWay("a\nbcdefgh\r\n.\r\n", 5, BareNewlinePolicy.Reject).Error);
        Assert.Equal(DataError.TooLarge, DataFeed.RunEveryWay("abcdefgh\nb\r\n.\r\n", 5, BareNewlinePolicy.Reject).Error);
    }

    [Fact]
    public void A_failing_buffer_latches_WriteFailed_and_drains()
    {
        var sink = new FailingWriter();
        var outcome = DataFeed.Run(Encoding.ASCII.GetBytes("abc\r\ndef\r\n.\r\nQUIT\r\n"), [2, 7], sink: sink);
        Assert.Equal(DataError.WriteFailed, outcome.Error);
        Assert.True(outcome.Complete);
        Assert.Equal(13, outcome.Consumed);
    }

    private sealed class FailingWriter : IBufferWriter<byte>
    {
        public void Advance(int count) { }
        public Memory<byte> GetMemory(int sizeHint = 0) => throw new IOException("disk full");
        public Span<byte> GetSpan(int sizeHint = 0) => throw new IOException("disk full");
    }

    // BDAT (RFC 3030): content is taken as is, never unstuffed, never ended by its bytes.
    [Theory]
    [InlineData("a\r\n.\r\n", "a\r\n.\r\n")]
    [InlineData(".\r\n", ".\r\n")]
    [InlineData("..x\r\n", "..x\r\n")]
    [InlineData("a\nb", "a\r\nb")]
    [InlineData("a\rb", "a\r\nb")]
    [InlineData("a\r", "a\r\n")]     // Finish: a CR at the very end is bare
    [InlineData("a\r\r", "a\r\n\r\n")]
    [InlineData("", "")]
    public void Bdat_content_is_verbatim_apart_from_bare_newlines(string input, string expected)
    {
        var outcome = DataFeed.RunEveryWay(input, dot: false);
        Assert.Equal(expected, outcome.Output);
        Assert.Equal(input.Length, outcome.Consumed);
        Assert.True(outcome.Complete); // only because Finish() was called
    }

    [Fact]
    public void Bdat_never_completes_by_itself()
    {
        var reader = new DataReader(new ArrayBufferWriter<byte>(), long.MaxValue, BareNewlinePolicy.Normalize, dotTransparency: false);
        byte[] tricky = "\r\n.\r\n\n.\n\r.\r.\r\n"u8.ToArray();
        Assert.Equal(tricky.Length, reader.Process(tricky));
        Assert.False(reader.IsComplete);
        reader.Finish();
        Assert.True(reader.IsComplete);
    }

    [Fact]
    public void Bdat_CR_at_a_chunk_end_pairs_with_LF_in_the_next()
    {
        var outcome = DataFeed.Run("abc\r\ndef"u8.ToArray(), [4], policy: BareNewlinePolicy.Reject, dot: false);
        Assert.Equal(DataError.None, outcome.Error);
        Assert.Equal("abc\r\ndef", outcome.Output);
    }

    [Fact]
    public void Bdat_trailing_CR_is_refused_under_Reject()
    {
        Assert.Equal(DataError.BareNewline, DataFeed.RunEveryWay("abc\r", policy: BareNewlinePolicy.Reject, dot: false).Error);
        Assert.Equal(DataError.None, DataFeed.RunEveryWay("abc\r\n", policy: BareNewlinePolicy.Reject, dot: false).Error);
    }

    [Fact]
    public void Finish_is_only_for_bdat()
    {
        var reader = new DataReader(new ArrayBufferWriter<byte>(), 10, BareNewlinePolicy.Normalize, dotTransparency: true);
        Assert.Throws<InvalidOperationException>(reader.Finish);
    }

    internal static void AssertOnlyCrlf(string output)
    {
        for (int i = 0; i < output.Length; i++)
        {
            if (output[i] == '\r') Assert.True(i + 1 < output.Length && output[i + 1] == '\n', $"bare CR at {i} in {Escapes.Show(output)}");
            if (output[i] == '\n') Assert.True(i > 0 && output[i - 1] == '\r', $"bare LF at {i} in {Escapes.Show(output)}");
        }
    }
}
