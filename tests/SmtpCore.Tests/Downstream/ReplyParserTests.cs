using System.Buffers;
using System.Text;
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

public class ReplyParserTests
{
    public static TheoryData<string, int, string?, string[]> Valid => new()
    {
        { "250 OK\r\n", 250, null, ["OK"] },
        { "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n", 250, null, ["fake.test", "PIPELINING", "8BITMIME"] },
        { "550 5.1.1 No such user\r\n", 550, "5.1.1", ["No such user"] },
        { "451-4.7.0 first\r\n451 4.7.0 second\r\n", 451, "4.7.0", ["first", "second"] },
        { "250 2.1.0\r\n", 250, "2.1.0", [""] },
        { "554 5.7.123 blocked\r\n", 554, "5.7.123", ["blocked"] },
        { "250\r\n", 250, null, [""] },
        { "354 \r\n", 354, null, [""] },
        { "451 5.0.0 class differs from code\r\n", 451, null, ["5.0.0 class differs from code"] },
        { "250 2.0.0.1 not a status code\r\n", 250, null, ["2.0.0.1 not a status code"] },
        { "250 2.0.0ok\r\n", 250, null, ["2.0.0ok"] },
        { "220 smtp.example ESMTP bare LF\n", 220, null, ["smtp.example ESMTP bare LF"] },
        { "250-2.0.0 ok\r\n250-continued\r\n250 2.0.0 end\r\n", 250, "2.0.0", ["ok", "continued", "end"] },
        { "250 caf\u00e9 \u00fcnicode\r\n", 250, null, ["caf\u00e9 \u00fcnicode"] },
    };

    public static TheoryData<string> Malformed => new()
    {
        "25 OK\r\n",
        "abc def\r\n",
        "250x\r\n",
        "250-a\r\n251 b\r\n",
        "650 bad class\r\n",
        "199 too low\r\n",
        "260 bad second digit\r\n",
        "250 bare\rCR\r\n",
        "250 nul\0\r\n",
        "\r\n",
        "250-" + new string('x', 5000) + "\r\n",
    };

    [Theory, MemberData(nameof(Valid))]
    public void ParsesCompleteReply_InOneSegmentAndInOneByteSegments(string wire, int code, string? enhanced, string[] lines)
    {
        var bytes = Encoding.UTF8.GetBytes(wire);
        foreach (var sequence in new[] { new ReadOnlySequence<byte>(bytes), Segments.OneByteEach(bytes) })
        {
            var reader = new SequenceReader<byte>(sequence);
            Assert.Equal(ReplyParseResult.Complete, ReplyParser.TryParseReply(ref reader, out var reply, out var error));
            Assert.Null(error);
            Assert.Equal(code, reply!.Code);
            Assert.Equal(enhanced, reply.Enhanced);
            Assert.Equal(lines, reply.Lines);
            Assert.True(reader.End);
        }
    }

    [Theory, MemberData(nameof(Valid))]
    public void EveryPrefixIsIncompleteAndConsumesNothing(string wire, int code, string? enhanced, string[] lines)
    {
        _ = (code, enhanced, lines);
        var bytes = Encoding.UTF8.GetBytes(wire);
        for (int length = 0; length < bytes.Length; length++)
        {
            foreach (var sequence in new[] { new ReadOnlySequence<byte>(bytes, 0, length), Segments.OneByteEach(bytes[..length]) })
            {
                var reader = new SequenceReader<byte>(sequence);
                Assert.Equal(ReplyParseResult.Incomplete, ReplyParser.TryParseReply(ref reader, out var reply, out _));
                Assert.Null(reply);
                Assert.Equal(0, reader.Consumed);
            }
        }
    }

    [Theory, MemberData(nameof(Malformed))]
    public void MalformedIsAnError_AndNoPrefixIsEverComplete(string wire)
    {
        var bytes = Encoding.UTF8.GetBytes(wire);
        var full = new SequenceReader<byte>(Segments.OneByteEach(bytes));
        Assert.Equal(ReplyParseResult.Error, ReplyParser.TryParseReply(ref full, out _, out var error));
        Assert.False(string.IsNullOrEmpty(error));

        for (int length = 0; length < bytes.Length; length++)
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes, 0, length));
            Assert.NotEqual(ReplyParseResult.Complete, ReplyParser.TryParseReply(ref reader, out _, out _));
        }
    }

    [Fact]
    public void PipelinedRepliesParseOneAtATime()
    {
        var bytes = "250 2.1.0 sender ok\r\n250-2.1.5 one\r\n250 2.1.5 rcpt ok\r\n550 5.1.1 unknown\r\n45"u8.ToArray();
        var reader = new SequenceReader<byte>(Segments.OneByteEach(bytes));
        var codes = new List<int>();
        while (ReplyParser.TryParseReply(ref reader, out var reply, out _) == ReplyParseResult.Complete) codes.Add(reply!.Code);
        Assert.Equal([250, 250, 550], codes);
        Assert.Equal(2, reader.Remaining);   // the partial "45" stays for the next read
    }

    [Fact]
    public void LineCapIsEnforcedBeforeTheLineFeedArrives()
    {
        var almost = Encoding.ASCII.GetBytes("250 " + new string('x', ReplyParser.MaxLineLength - 5));
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(almost));
        Assert.Equal(ReplyParseResult.Incomplete, ReplyParser.TryParseReply(ref reader, out _, out _));

        var over = Encoding.ASCII.GetBytes("250 " + new string('x', ReplyParser.MaxLineLength));
        reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(over));
        Assert.Equal(ReplyParseResult.Error, ReplyParser.TryParseReply(ref reader, out _, out _));

        var longest = Encoding.ASCII.GetBytes("250 " + new string('x', ReplyParser.MaxLineLength - 6) + "\r\n");
        reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(longest));
        Assert.Equal(ReplyParseResult.Complete, ReplyParser.TryParseReply(ref reader, out _, out _));
    }

    [Fact]
    public void EndlessMultiLineReplyIsCapped()
    {
        var sb = new StringBuilder();
        while (sb.Length <= ReplyParser.MaxReplyLength) sb.Append("250-").Append('x', 100).Append("\r\n");
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(sb.ToString())));
        Assert.Equal(ReplyParseResult.Error, ReplyParser.TryParseReply(ref reader, out _, out var error));
        Assert.Contains("longer than", error);
    }

    // Recent short lines are shared: the same text gives the same string, a different one its own.
    [Fact]
    public void ARepeatedLineIsSharedAndANearOneKeepsItsOwnText()
    {
        SmtpReply Parse(string wire)
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(wire)));
            Assert.Equal(ReplyParseResult.Complete, ReplyParser.TryParseReply(ref reader, out var reply, out _));
            return reply!;
        }

        var first = Parse("250 2.0.0 Ok\r\n");
        var again = Parse("250 2.0.0 Ok\r\n");
        var upper = Parse("250 2.0.0 OK\r\n");
        var other = Parse("250 2.1.5 Ok\r\n");

        Assert.Same(first, again);
        Assert.Same(first.Lines[0], again.Lines[0]);
        Assert.Same(first.Enhanced, again.Enhanced);
        Assert.Equal("OK", upper.Lines[0]);
        Assert.Equal("2.1.5", other.Enhanced);
        Assert.Equal("Ok", first.Lines[0]);
    }

    // A multi-line reply that differs from a recent one only in its last line is a reply of its own.
    [Fact]
    public void AReplyDifferingInOneLineIsNotShared()
    {
        SmtpReply Parse(string wire)
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(wire)));
            Assert.Equal(ReplyParseResult.Complete, ReplyParser.TryParseReply(ref reader, out var reply, out _));
            return reply!;
        }

        var one = Parse("250-mx.test\r\n250-PIPELINING\r\n250 DSN\r\n");
        var other = Parse("250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        var shorter = Parse("250-mx.test\r\n250 PIPELINING\r\n");
        var again = Parse("250-mx.test\r\n250-PIPELINING\r\n250 DSN\r\n");

        Assert.Equal(["mx.test", "PIPELINING", "DSN"], one.Lines);
        Assert.Equal(["mx.test", "PIPELINING", "SIZE 10"], other.Lines);
        Assert.Equal(["mx.test", "PIPELINING"], shorter.Lines);
        Assert.Equal(one.Lines, again.Lines);
        Assert.Equal(250, Parse("250 PIPELINING\r\n").Code);
        Assert.Equal(["PIPELINING"], Parse("251 PIPELINING\r\n").Lines);
        Assert.Equal(251, Parse("251 PIPELINING\r\n").Code);
    }
}

internal static class Segments
{
    public static ReadOnlySequence<byte> OneByteEach(byte[] bytes)
    {
        if (bytes.Length == 0) return ReadOnlySequence<byte>.Empty;
        var first = new Segment(bytes.AsMemory(0, 1), 0);
        var last = first;
        for (int i = 1; i < bytes.Length; i++) last = last.Append(bytes.AsMemory(i, 1));
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
