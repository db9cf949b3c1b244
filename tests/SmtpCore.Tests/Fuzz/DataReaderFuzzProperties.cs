using System.Buffers;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Fuzz;

// DATA and BDAT content under hostile streams in random chunkings. What must hold whatever
// arrives: DATA ends at the first CRLF "." CRLF (the DATA command's own CRLF counts as the first)
// and nowhere else; BDAT never ends on its own; what is passed on has CRLF line ends only, never
// more than the size cap, and after the downstream client's dot-stuffing it is exactly one message
// for a strict reader (no smuggling through the gateway).
public class DataReaderFuzzProperties
{
    public sealed record Case(Chunked Data, BareNewlinePolicy Policy, long MaxSize)
    {
        public override string ToString() => $"{Data} {Policy} max={MaxSize}";
    }

    public static class Arbitraries
    {
        public static Arbitrary<Case> Case() =>
            (from data in FuzzArbitraries.Chunked().Generator
             from policy in Gen.Elements(BareNewlinePolicy.Normalize, BareNewlinePolicy.Reject)
             from max in Gen.Frequency((1, Gen.Choose(0, 64).Select(m => (long)m)), (3, Gen.Constant(long.MaxValue)))
             select new Case(data, policy, max)).ToArbitrary();
    }

    private sealed record Fed(ArrayBufferWriter<byte> Output, DataReader Reader, int Consumed);

    private static Fed Feed(Case c, bool dot)
    {
        var output = new ArrayBufferWriter<byte>();
        var reader = new DataReader(output, c.MaxSize, c.Policy, dot);
        int consumed = 0;
        foreach (var piece in c.Data.Pieces())
        {
            int used = reader.Process(piece);
            consumed += used;
            if (reader.IsComplete) break;
            Assert.Equal(piece.Length, used); // an unfinished reader takes all it is given
        }
        return new Fed(output, reader, consumed);
    }

    private static int IndexOf(byte[] haystack, ReadOnlySpan<byte> needle) => haystack.AsSpan().IndexOf(needle);

    [Property(MaxTest = 2000, Arbitrary = [typeof(Arbitraries)])]
    public void DATA_ends_exactly_at_the_first_CRLF_dot_CRLF(Case c)
    {
        var fed = Feed(c, dot: true);
        // The DATA command's CRLF is the line end before the first content byte.
        byte[] withCommandEnd = [.. "\r\n"u8, .. c.Data.Input];
        int terminator = IndexOf(withCommandEnd, "\r\n.\r\n"u8);
        if (terminator < 0)
        {
            Assert.False(fed.Reader.IsComplete, "DATA completed without CRLF.CRLF");
            Assert.Equal(c.Data.Input.Length, fed.Consumed);
        }
        else
        {
            Assert.True(fed.Reader.IsComplete, $"CRLF.CRLF at {terminator} did not end DATA");
            Assert.Equal(terminator + 5 - 2, fed.Consumed); // nothing after the terminator is content
        }
    }

    [Property(MaxTest = 2000, Arbitrary = [typeof(Arbitraries)])]
    public void BDAT_content_never_ends_by_itself(Case c)
    {
        var fed = Feed(c, dot: false);
        Assert.False(fed.Reader.IsComplete);
        Assert.Equal(c.Data.Input.Length, fed.Consumed);
        fed.Reader.Finish();
        Assert.True(fed.Reader.IsComplete);
    }

    [Property(MaxTest = 2000, Arbitrary = [typeof(Arbitraries)])]
    public void What_is_passed_on_has_CRLF_only_and_respects_the_cap(Case c)
    {
        foreach (bool dot in new[] { true, false })
        {
            var fed = Feed(c, dot);
            if (!dot) fed.Reader.Finish();
            var written = fed.Output.WrittenSpan;
            Assert.True(written.Length <= c.MaxSize, $"{written.Length} bytes written past a cap of {c.MaxSize}");
            Assert.True(fed.Reader.Size >= written.Length);
            if (fed.Reader.Error == DataError.None)
                Assert.False(HasBareNewline(written), $"bare CR/LF passed on: {Protocol.Escapes.Show(written)}");
            if (fed.Reader.Error == DataError.BareNewline)
                Assert.Equal(BareNewlinePolicy.Reject, c.Policy);
        }
    }

    // The gateway's whole path for one message: read from the client, stuffed again by the
    // downstream client, read by a strict downstream. The downstream must see the same content,
    // ending exactly where the stuffer's terminator ends: one message, nothing smuggled after it.
    [Property(MaxTest = 2000, Arbitrary = [typeof(Arbitraries)])]
    public void Forwarded_content_is_one_message_for_a_strict_reader(Case c)
    {
        foreach (bool dot in new[] { true, false })
        {
            var fed = Feed(c with { MaxSize = long.MaxValue }, dot);
            if (!dot) fed.Reader.Finish();
            if (fed.Reader.Error != DataError.None) continue; // refused, nothing is forwarded
            byte[] content = fed.Output.WrittenSpan.ToArray();

            var wire = new ArrayBufferWriter<byte>();
            var stuffer = new DotStuffer();
            stuffer.Write(content, wire);
            stuffer.Finish(wire);

            var downstream = new ArrayBufferWriter<byte>();
            var strict = new DataReader(downstream, long.MaxValue, BareNewlinePolicy.Reject, dotTransparency: true);
            int used = strict.Process(wire.WrittenSpan);
            Assert.True(strict.IsComplete, "the forwarded message never ends");
            Assert.Equal(wire.WrittenCount, used);
            Assert.Equal(DataError.None, strict.Error);
            byte[] expected = content.Length == 0 || content.AsSpan().EndsWith("\r\n"u8) ? content : [.. content, .. "\r\n"u8];
            Assert.Equal(Protocol.Escapes.Show(expected), Protocol.Escapes.Show(downstream.WrittenSpan));
        }
    }

    private static bool HasBareNewline(ReadOnlySpan<byte> bytes)
    {
        for (int i = 0; i < bytes.Length; i++)
        {
            if (bytes[i] == '\r' && (i + 1 == bytes.Length || bytes[i + 1] != '\n')) return true;
            if (bytes[i] == '\n' && (i == 0 || bytes[i - 1] != '\r')) return true;
        }
        return false;
    }
}
